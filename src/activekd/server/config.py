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
    log_level: str = "INFO"
    grace_seconds: float = 10.0
    max_message_bytes: int = 64 * 1024 * 1024
    device: str = "auto"
    threads: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(
        cls, service: str, argv: list[str] | None = None, extra_keys: tuple[str, ...] = ()
    ) -> ServerConfig:
        """Defaults < ``ACTIVEKD_<NAME>`` env vars < ``--name`` flags.

        ``extra_keys`` are service-specific names (e.g. ``teacher_backend``) read the same way.
        """
        grpc_port, metrics_port = DEFAULT_PORTS.get(service, (0, 0))
        values: dict[str, Any] = {"grpc_port": grpc_port, "metrics_port": metrics_port}
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
