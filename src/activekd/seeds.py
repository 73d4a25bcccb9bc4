"""The one per-round seed rule: every strategy, student and service derives round seeds here."""

from __future__ import annotations

import operator

#: Round ``r`` of an experiment with seed ``s`` uses ``(s * SEED_STRIDE + r) mod SEED_MODULUS``.
SEED_STRIDE: int = 1000

#: Round seeds stay below 2**63, so they fit the int64 / uint64 seed fields of every API and
#: ``torch.manual_seed``.
SEED_MODULUS: int = 2**63


def round_seed(seed: int, round_: int) -> int:
    """The seed of round ``round_`` (0-based) of an experiment seeded with ``seed`` (>= 0).

    Exact integer arithmetic: the result is never carried through a float.
    """
    s, r = operator.index(seed), operator.index(round_)
    if s < 0 or r < 0:
        raise ValueError(f"seed {s} and round {r} must be >= 0")
    return (s * SEED_STRIDE + r) % SEED_MODULUS
