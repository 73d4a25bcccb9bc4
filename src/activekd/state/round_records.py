"""The experiment data model: round states and their transitions, records, snapshots, events.

Plain Python (no Redis): :mod:`activekd.state.experiments` stores these in Redis, and the light
client (:mod:`activekd.wire`) converts them to and from protos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from activekd.errors import Aborted, InvalidArgument, shown

# the experiment id rule lives in activekd.ids (one copy); importable from here as before
from activekd.ids import check_experiment_id as check_experiment_id
from activekd.state.experiment_spec import ExperimentSpec


class RoundState(IntEnum):
    """Mirrors ``activekd.v1.RoundState`` (same numbers; names without the prefix)."""

    UNSPECIFIED = 0
    CREATED = 1
    TEACHER_SCORED = 2
    STUDENT_TRAINED = 3
    POOL_SCORED = 4
    SELECTED = 5
    AWAITING_LABELS = 6
    LABELS_COMPLETE = 7
    FINISHED = 8


_NEXT: dict[RoundState, tuple[RoundState, ...]] = {
    RoundState.CREATED: (RoundState.TEACHER_SCORED,),
    RoundState.TEACHER_SCORED: (RoundState.STUDENT_TRAINED,),
    RoundState.POOL_SCORED: (RoundState.SELECTED,),
    RoundState.SELECTED: (RoundState.AWAITING_LABELS,),
    RoundState.AWAITING_LABELS: (RoundState.LABELS_COMPLETE,),
    RoundState.LABELS_COMPLETE: (RoundState.CREATED,),
    RoundState.FINISHED: (),
    RoundState.UNSPECIFIED: (),
}


def allowed_next(state: RoundState, round_: int, num_rounds: int) -> tuple[RoundState, ...]:
    """The states ``state`` may move to in round ``round_`` of an experiment with ``num_rounds``."""
    if state is RoundState.STUDENT_TRAINED:
        return (RoundState.FINISHED,) if round_ >= num_rounds else (RoundState.POOL_SCORED,)
    return _NEXT[state]


def _state(value: RoundState | int | str, name: str) -> RoundState:
    try:
        if isinstance(value, str):
            return RoundState[value.removeprefix("ROUND_STATE_")]
        return RoundState(value)
    except (KeyError, ValueError):
        raise InvalidArgument(f"{name} {shown(value)} is not a round state", field=name) from None


class TransitionAborted(Aborted):
    """A concurrent writer changed the experiment first; carries what was found."""

    def __init__(self, message: str, *, state: RoundState, round_: int, version: int) -> None:
        super().__init__(message)
        self.state = state
        self.round = round_
        self.version = version


@dataclass
class RoundRecord:
    """What one round recorded (maps onto ``RoundSummary``; the rest is for the driver)."""

    round: int
    state: RoundState
    labeled_count: int = 0
    accuracy: float | None = None
    teacher_agreement: float | None = None
    #: stop-set agreement with the previous round's student / with the teacher
    stability: float | None = None
    stop_set_teacher_agreement: float | None = None
    selected_item_ids: list[str] = field(default_factory=list)
    teacher_pool_id: str = ""
    student_pool_id: str = ""
    checkpoint_id: str = ""
    selection_request_id: str = ""
    #: set when the experiment stopped early in this round (POOL_SCORED -> FINISHED)
    stop_reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    state_times: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Experiment:
    """A snapshot of one experiment (maps onto ``activekd.v1.Experiment``)."""

    experiment_id: str
    spec: ExperimentSpec
    state: RoundState
    current_round: int
    version: int
    labeled_count: int
    pending_labels: int
    pool_size: int | None
    created_unix: float
    updated_unix: float
    rounds: list[RoundRecord] = field(default_factory=list)
    #: label changes queued while the round was closed (``ExperimentStore.submit_labels``)
    pending_corrections: int = 0
    #: why the experiment finished before its last round ("" = it did not stop early)
    stop_reason: str = ""

    @property
    def allowed_next(self) -> tuple[RoundState, ...]:
        return allowed_next(self.state, self.current_round, self.spec.num_rounds)


@dataclass(frozen=True)
class SubmitResult:
    """Outcome of ``submit_labels``: counts, and the state/version after the call."""

    accepted: int
    unchanged: int
    remaining: int
    state: RoundState
    version: int
    #: labels removed at once (open round); their picks wait for a label again
    withdrawn: int = 0
    #: changes recorded as corrections (round closed), applied when the next round starts
    deferred: int = 0


@dataclass(frozen=True)
class Event:
    """One entry of the experiment's event stream (maps onto ``RoundEvent``)."""

    event_id: str
    experiment_id: str
    round: int
    state: RoundState
    version: int
    unix_time: float
    message: str
    kind: str  # "created", "transition" or "labels"
    from_state: RoundState | None
