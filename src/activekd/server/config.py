"""Service configuration from environment variables and command-line flags (flags win)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_PORTS: dict[str, tuple[int, int]] = {
    "selection": (50051, 9101),
    "teacher": (50052, 9102),
    "trainer": (50053, 9103),
    "experiment": (50054, 9104),
}


@dataclass
class ServerConfig:
    """Settings every service shares; ``extra`` holds service-specific ``ACTIVEKD_*`` values."""

    service: str
    grpc_host: str = "[::]"
    grpc_port: int = 0
    metrics_port: int = 0
    redis_url: str = "redis://localhost:6379/0"
    store_uri: str = "./.activekd/store"
    #: local memory-mapped cache of a remote ``store_uri`` (s3://...); empty: ~/.cache/activekd/store
    store_cache_dir: str = ""
    #: JSON object of fsspec storage options for a remote ``store_uri``, e.g.
    #: ``{"endpoint_url": "http://minio:9000"}``; credentials come from the filesystem's own
    #: settings (``AWS_*`` for S3), not from here
    store_options: str = ""
    log_level: str = "INFO"
    grace_seconds: float = 10.0
    max_message_bytes: int = 64 * 1024 * 1024
    device: str = "auto"
    threads: int = 0
    #: selection: Ray cluster for pcoreset/coreset over sharded pools ("" off, "local" a private
    #: local instance, or ray://head:10001); docs/scale-out.md
    ray_address: str = ""
    #: selection: CPUs each shard actor reserves on the Ray cluster
    ray_cpus_per_shard: float = 1.0
    #: glibc malloc mmap threshold in bytes, fixed at start (server/allocator.py); 0 = glibc's
    #: dynamic default. Default per service: ``allocator.SERVICE_DEFAULTS`` (selection 128 KiB)
    malloc_mmap_threshold: int = 0
    #: allocator the service should run with: "jemalloc" (preloaded by the launcher) or "glibc"
    malloc: str = "jemalloc"
    # --- security (docs/security.md) ---
    #: "required" (default) or "off" (explicit; logs a WARNING at start)
    auth: str = "required"
    #: token files, comma-separated; one ``role:token[:name]`` per line, re-read on change
    auth_tokens_file: str = ""
    #: ``role:token[:name]`` entries, comma-separated
    auth_tokens: str = ""
    #: server reflection: "open" (no token needed), "auth" (token needed) or "off"
    reflection: str = "open"
    #: PEM server certificate chain and key: TLS on the gRPC port when both are set
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: PEM CA of client certificates: set => mTLS (a client certificate is required)
    tls_client_ca_file: str = ""
    #: plaintext port serving only grpc.health.v1 (probes); -1 = none, 0 = any free port
    health_port: int = -1
    #: seconds between readiness checks of Redis; <= 0 = no check (ready once started)
    ready_interval_seconds: float = 2.0
    # --- limits (server/limits.py) ---
    max_concurrent_rpcs: int = 256
    #: per-method caps, e.g. "ScorePool=4,TrainRound=2"
    max_concurrent_per_method: str = ""
    max_pool_rows: int = 50_000_000
    max_pool_bytes: int = 64 << 30
    max_budget: int = 1_000_000
    # --- confined inputs (teacher/sources.py) ---
    #: the roots request-named host paths must resolve under, os.pathsep-separated (empty: the
    #: pool store and the shipped data); teacher sources and trainer weights_path both obey it
    data_roots: str = ""
    #: URI schemes sources may use, comma-separated ("file"; add "s3", "gs", "http", "https")
    source_schemes: str = "file"
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(
        cls, service: str, argv: list[str] | None = None, extra_keys: tuple[str, ...] = ()
    ) -> ServerConfig:
        """Defaults < ``ACTIVEKD_<NAME>`` env vars < ``--name`` flags.

        ``extra_keys`` are service-specific names (e.g. ``teacher_backend``) read the same way.
        """
        grpc_port, metrics_port = DEFAULT_PORTS.get(service, (0, 0))
        from activekd.server.allocator import SERVICE_DEFAULTS

        values: dict[str, Any] = {
            "grpc_port": grpc_port,
            "metrics_port": metrics_port,
            "malloc_mmap_threshold": SERVICE_DEFAULTS.get(service, 0),
        }
        typed = {f.name: f for f in fields(cls) if f.name not in ("service", "extra")}
        for name in typed:
            env = os.environ.get(f"ACTIVEKD_{name.upper()}")
            if env is not None:
                values[name] = env
        extra = {
            k: os.environ[f"ACTIVEKD_{k.upper()}"]
            for k in extra_keys
            if f"ACTIVEKD_{k.upper()}" in os.environ
        }

        parser = argparse.ArgumentParser(
            prog=f"activekd-{service}", description=f"{service} service"
        )
        for name in (*typed, *extra_keys):
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None)
        args = parser.parse_args(argv)
        for name in typed:
            if getattr(args, name) is not None:
                values[name] = getattr(args, name)
        for name in extra_keys:
            if getattr(args, name) is not None:
                extra[name] = getattr(args, name)

        cfg = cls(service=service, extra=extra)
        for name, value in values.items():
            kind = typed[name].type
            try:
                if kind in ("int", int):
                    value = int(value)
                elif kind in ("float", float):
                    value = float(value)
            except ValueError as exc:
                raise SystemExit(f"ACTIVEKD_{name.upper()}={value!r} is not a number") from exc
            setattr(cfg, name, value)
        return cfg
