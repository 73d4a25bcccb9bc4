"""The package dependency rules of docs/architecture.md, as data (the tests read them here)."""

from __future__ import annotations

#: Top-level modules holding the one copy of each shared rule.
SHARED = frozenset({"errors", "devices", "arrays", "seeds", "ids", "defaults"})

#: Core packages: import no gRPC, no protobuf, no generated code, no wire/server side.
CORE = ("selection", "student", "teacher", "state", "store", "data", "experiment")

#: What each part of ``activekd`` may import (other parts of ``activekd``). ``cli`` and the
#: package root may import anything; ``v1`` is generated code and not checked.
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "seeds": frozenset(),
    "defaults": frozenset(),
    "devices": frozenset({"errors"}),
    "arrays": frozenset({"errors"}),
    "ids": frozenset({"errors"}),
    "extras": frozenset(),
    "data": SHARED,
    "selection": SHARED,
    "store": SHARED,
    "state": SHARED | {"store"},
    "teacher": SHARED | {"data", "store", "state"},
    "student": SHARED | {"data", "store", "state", "teacher"},  # round_job -> teacher.adapt
    "experiment": SHARED | {"data", "selection", "store", "state", "teacher", "student"},
    # the wire side: conversions and clients; reuses the library's records (CheckpointInfo,
    # ExperimentSpec, RoundState, PoolMeta) instead of defining second copies
    "wire": SHARED | {"v1", "store", "state", "student"},
    "client": frozenset({"wire"}),
    "server": SHARED | {"v1", "wire", "store", "state"},
    # deprecated re-export (one release): activekd.localstack -> activekd.orchestration
    "localstack": frozenset({"orchestration"}),
    # the Label Studio ML backend: an HTTP adapter over the experiment service's client
    "annotation": SHARED | {"wire", "client", "state", "store", "server"},
    # scale-out on Ray: wraps the library's engines (k-center, the teacher's pool scoring) in
    # Ray actors and jobs; no wire, no services
    "distributed": SHARED | {"selection", "store", "state", "teacher"},
    "orchestration": SHARED
    | {"v1", "wire", "client", "server", "data", "selection", "store", "state", "teacher"}
    | {"experiment"},
}

#: Third-party modules that only the wire/server side may import.
WIRE_ONLY_MODULES = ("grpc", "grpc_health", "grpc_reflection", "grpc_status", "google.protobuf")

#: Old import paths kept for one release (CHANGELOG.md): each only re-exports its new home, so
#: the layer rules check the new home, not these.
DEPRECATED_SHIMS = frozenset(
    {
        "activekd.localstack",
        "activekd.server.pools",
        "activekd.server.tensors",
        "activekd.experiment.demo",
        "activekd.experiment.driver",
        "activekd.experiment.spec",
        "activekd.experiment.training_job",
    }
)
