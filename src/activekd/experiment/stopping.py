"""The stopping signal: stabilizing predictions on a fixed stop set (Bloodgood and
Vijay-Shanker 2009), and the student's agreement with the teacher on it.

One copy of the rule, used by the in-process loop (``activekd.experiment.loop``), the
experiment service's driver and the stopping benchmark:

- the stop set is ``min(rule.stop_set_size, n)`` pool rows drawn once from the experiment seed
  (labeled rows included: the signal asks whether the model still changes, not how it does on
  unseen data);
- round ``r >= 1``'s *stability* is the share of the stop set on which the argmax of round
  ``r``'s student equals round ``r - 1``'s (students are re-initialised every round, so some
  disagreement is noise, not learning);
- the rule fires after ``patience`` consecutive rounds with stability >= ``min_stability``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from activekd.errors import InvalidArgument
from activekd.state.experiment_spec import StoppingRule

#: added to the experiment seed so the stop set is independent of the initial labels' draw
STOP_SET_STREAM = 0x5709


def stop_set(n_rows: int, seed: int, size: int) -> np.ndarray:
    """Sorted row indices of the stop set: ``min(size, n_rows)`` rows drawn with ``seed``."""
    if n_rows <= 0:
        raise InvalidArgument(f"a stop set needs pool rows, got {n_rows}")
    rng = np.random.default_rng([int(seed), STOP_SET_STREAM])
    return np.sort(rng.choice(n_rows, size=min(int(size), n_rows), replace=False))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows where the argmax of two probability (or logit) matrices agrees."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise InvalidArgument(
            f"agreement needs two equal (N, C) matrices, got {a.shape}, {b.shape}"
        )
    return float((a.argmax(1) == b.argmax(1)).mean())


@dataclass(frozen=True)
class StopSignal:
    """One round's signal on the stop set (``stability`` is None in round 0)."""

    stability: float | None
    teacher_agreement: float | None


def round_signal(
    current: np.ndarray,
    previous: np.ndarray | None,
    teacher: np.ndarray | None,
    rows: np.ndarray,
) -> StopSignal:
    """The signal of a round from the student's pool probabilities (``current``), the previous
    round's (None in round 0) and the teacher's, all row-aligned with the pool."""
    cur = np.asarray(current)[rows]
    return StopSignal(
        stability=None if previous is None else agreement(cur, np.asarray(previous)[rows]),
        teacher_agreement=None if teacher is None else agreement(cur, np.asarray(teacher)[rows]),
    )


def should_stop(stabilities: Sequence[float | None], rule: StoppingRule) -> bool:
    """True when the rule is on and the last ``patience`` stabilities all reach the threshold."""
    if not rule.enabled or len(stabilities) < rule.patience:
        return False
    last = stabilities[-rule.patience :]
    return all(s is not None and s >= rule.min_stability for s in last)


def stop_reason(stabilities: Sequence[float | None], rule: StoppingRule) -> str:
    """The sentence recorded when the rule fires."""
    shown = ", ".join(f"{s:.4f}" for s in stabilities[-rule.patience :] if s is not None)
    return (
        f"stability >= {rule.min_stability:g} for {rule.patience} round(s) in a row ({shown}) "
        f"on a stop set of {rule.stop_set_size} items"
    )


def first_stop(stabilities: Sequence[float | None], rule: StoppingRule) -> int | None:
    """The first round index at which the rule fires on a recorded trajectory (None: never)."""
    for r in range(len(stabilities)):
        if should_stop(stabilities[: r + 1], rule):
            return r
    return None


__all__ = [
    "STOP_SET_STREAM",
    "StopSignal",
    "agreement",
    "first_stop",
    "round_signal",
    "should_stop",
    "stop_reason",
    "stop_set",
]
