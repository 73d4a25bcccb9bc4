"""Client of ``activekd.v1.ExperimentService``: create and drive experiments, labels, events."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from activekd.state.experiment_spec import ExperimentSpec
from activekd.state.round_records import RoundState
from activekd.v1 import experiment_pb2, experiment_pb2_grpc
from activekd.wire.channel import BaseClient
from activekd.wire.experiment_convert import ExperimentStatus, RoundEvent, spec_to_proto

SpecLike = ExperimentSpec | experiment_pb2.ExperimentSpec | Mapping[str, Any]


@dataclass(frozen=True)
class AdvanceResult:
    """AdvanceRound: the experiment after the step and the transition it made."""

    experiment: ExperimentStatus
    from_state: RoundState
    to_state: RoundState


@dataclass(frozen=True)
class SubmitLabelsResult:
    """SubmitLabels: counts (stored, same as before, still missing this round), the experiment,
    and the labels withdrawn at once / changes queued as corrections."""

    accepted: int
    unchanged: int
    remaining: int
    experiment: ExperimentStatus
    withdrawn: int = 0
    deferred: int = 0


def spec_message(spec: SpecLike) -> experiment_pb2.ExperimentSpec:
    """A spec given as the library dataclass, a dict of its fields or the proto itself."""
    if isinstance(spec, experiment_pb2.ExperimentSpec):
        return spec
    if isinstance(spec, ExperimentSpec):
        return spec_to_proto(spec)
    return spec_to_proto(ExperimentSpec(**dict(spec)))


class ExperimentClient(BaseClient):
    """ExperimentService: create and drive experiments, submit labels, watch round events."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        super().__init__(target, **kwargs)
        self.stub = experiment_pb2_grpc.ExperimentServiceStub(self.channel)

    def create(
        self, spec: SpecLike, experiment_id: str = "", timeout: float | None = None
    ) -> ExperimentStatus:
        resp = self.stub.CreateExperiment(
            experiment_pb2.CreateExperimentRequest(
                experiment_id=experiment_id, spec=spec_message(spec)
            ),
            timeout=self._deadline(timeout),
        )
        return ExperimentStatus.from_proto(resp.experiment)

    def get(self, experiment_id: str) -> ExperimentStatus:
        resp = self.stub.GetExperiment(
            experiment_pb2.GetExperimentRequest(experiment_id=experiment_id), timeout=self.timeout
        )
        return ExperimentStatus.from_proto(resp.experiment)

    def list(self, page_size: int = 50) -> Iterator[ExperimentStatus]:
        """Every experiment, fetching pages as needed."""
        token = ""
        while True:
            resp = self.stub.ListExperiments(
                experiment_pb2.ListExperimentsRequest(page_size=page_size, page_token=token),
                timeout=self.timeout,
            )
            yield from (ExperimentStatus.from_proto(e) for e in resp.experiments)
            token = resp.next_page_token
            if not token:
                return

    def delete(self, experiment_id: str) -> bool:
        return self.stub.DeleteExperiment(
            experiment_pb2.DeleteExperimentRequest(experiment_id=experiment_id),
            timeout=self.timeout,
        ).deleted

    def advance(
        self, experiment_id: str, expected_version: int = 0, timeout: float | None = None
    ) -> AdvanceResult:
        """One transition (not retried: the server's work is idempotent, but ask explicitly)."""
        resp = self.stub.AdvanceRound(
            experiment_pb2.AdvanceRoundRequest(
                experiment_id=experiment_id, expected_version=expected_version
            ),
            timeout=self._deadline(timeout),
        )
        return AdvanceResult(ExperimentStatus.from_proto(resp.experiment),
                             RoundState(resp.from_state), RoundState(resp.to_state))  # fmt: skip

    def submit_labels(
        self,
        experiment_id: str,
        labels: Mapping[str, int],
        overwrite: bool = False,
        withdraw: Sequence[str] = (),
    ) -> SubmitLabelsResult:
        """Store labels; ``overwrite`` changes existing ones, ``withdraw`` removes labels (both
        apply at once while the round awaits labels, else they are queued as corrections)."""
        resp = self.stub.SubmitLabels(
            experiment_pb2.SubmitLabelsRequest(
                experiment_id=experiment_id,
                overwrite=overwrite,
                withdraw_item_ids=list(withdraw),
                labels=[
                    experiment_pb2.ItemLabel(item_id=k, label=int(v)) for k, v in labels.items()
                ],
            ),
            timeout=self.timeout,
        )
        return SubmitLabelsResult(resp.accepted, resp.unchanged, resp.remaining,
                                  ExperimentStatus.from_proto(resp.experiment),
                                  resp.withdrawn, resp.deferred)  # fmt: skip

    def watch(self, experiment_id: str, timeout: float | None = None) -> Iterator[RoundEvent]:
        """Round events from the start of the experiment until it finishes."""
        for msg in self.stub.WatchExperiment(
            experiment_pb2.WatchExperimentRequest(experiment_id=experiment_id),
            timeout=self._deadline(timeout),
        ):
            yield RoundEvent.from_proto(msg.event)
