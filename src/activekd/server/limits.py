"""Per-service limits the shared interceptor enforces, and the deadline helper for long work.

Every limit comes from :class:`~activekd.server.config.ServerConfig` (``ACTIVEKD_MAX_*``); a value
``<= 0`` means "no limit". Concurrency counters never block: a call over a cap is refused at once
with RESOURCE_EXHAUSTED, naming the limit, so a client can back off and retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: Request fields capped by a limit, per method (short name): (dotted field path, Limits attribute).
#: Only values *above* the limit are refused.
FIELD_CAPS: dict[str, tuple[tuple[str, str], ...]] = {
    "SelectBatch": (("budget", "max_budget"),),
    "CreateExperiment": (("spec.budget_per_round", "max_budget"),),
    "UploadPool": (("header.num_items", "max_pool_rows"),),
}

#: Client-streaming methods whose summed message sizes are capped: method -> Limits attribute.
STREAM_BYTE_CAPS: dict[str, str] = {"UploadPool": "max_pool_bytes"}

#: Methods (prefixes of the full name) that no concurrency limit counts.
EXEMPT_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/",)


def parse_per_method(text: str) -> dict[str, int]:
    """``"ScorePool=4,TrainRound=2"`` -> ``{"ScorePool": 4, "TrainRound": 2}``.

    A key may also be a full name (``/activekd.v1.TeacherService/ScorePool``); only the method
    part is kept. Raises ``ValueError`` naming the setting on a malformed entry.
    """
    out: dict[str, int] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, value = entry.partition("=")
        name = name.strip().rsplit("/", 1)[-1]
        try:
            if not sep or not name:
                raise ValueError
            out[name] = int(value.strip())
        except ValueError:
            raise ValueError(
                f"ACTIVEKD_MAX_CONCURRENT_PER_METHOD entry {entry[:64]!r} is not Method=N"
            ) from None
    return out


@dataclass(frozen=True)
class Limits:
    """What one service accepts. ``<= 0`` disables a limit."""

    max_concurrent: int = 256
    per_method: Mapping[str, int] = field(default_factory=dict)  # "ScorePool" -> 4
    max_pool_rows: int = 50_000_000
    max_pool_bytes: int = 64 << 30
    max_budget: int = 1_000_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_method", MappingProxyType(dict(self.per_method)))

    @classmethod
    def from_config(cls, config: Any) -> Limits:
        """The limits of a ``ServerConfig`` (fields ``max_concurrent_rpcs``,
        ``max_concurrent_per_method``, ``max_pool_rows``, ``max_pool_bytes``, ``max_budget``);
        a missing field keeps the default. Raises ``SystemExit`` on a malformed value."""
        default = cls()
        per_method: Any = getattr(config, "max_concurrent_per_method", "") or ""
        try:
            parsed = (
                parse_per_method(per_method)
                if isinstance(per_method, str)
                else {str(k): int(v) for k, v in dict(per_method).items()}
            )
            return cls(
                max_concurrent=int(getattr(config, "max_concurrent_rpcs", default.max_concurrent)),
                per_method=parsed,
                max_pool_rows=int(getattr(config, "max_pool_rows", default.max_pool_rows)),
                max_pool_bytes=int(getattr(config, "max_pool_bytes", default.max_pool_bytes)),
                max_budget=int(getattr(config, "max_budget", default.max_budget)),
            )
        except (TypeError, ValueError) as exc:
            raise SystemExit(str(exc)) from exc

    def method_limit(self, method: str) -> int:
        """The concurrency cap of one method (full or short name); 0 = none."""
        return int(self.per_method.get(method.rsplit("/", 1)[-1], 0))


def remaining_seconds(context: Any) -> float | None:
    """Seconds left before the caller's deadline (``>= 0``), or ``None`` without a deadline.

    Long work (scoring, training, a downstream call) should stop or pass this on rather than run
    past a deadline nobody waits for any more.
    """
    try:
        left = context.time_remaining()
    except (AttributeError, NotImplementedError):
        return None
    if left is None:
        return None
    return max(0.0, float(left))


__all__ = [
    "EXEMPT_PREFIXES",
    "FIELD_CAPS",
    "STREAM_BYTE_CAPS",
    "Limits",
    "parse_per_method",
    "remaining_seconds",
]
