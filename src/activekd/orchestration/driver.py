"""Drives experiments through the services: one ``step`` = one round-state transition.

Each step does its work through the teacher, trainer and selection services, then records the
result with ``ExperimentStore.advance`` (a versioned compare-and-set). Work is idempotent, so a
driver that crashed after the work but before the transition simply redoes it: the teacher's
output is cached, the trainer overwrites the round's checkpoint atomically, and the selection
request id ``<experiment>/round-<r>`` makes SelectBatch return the recorded answer.
If two drivers race, the loser gets ``TransitionAborted`` and reads the winner's state.

Round ``r`` trains the student and selects with seed ``activekd.seeds.round_seed(spec.seed, r)``,
sent in the integer ``seed`` fields of TrainRoundRequest and SelectBatchRequest.

The driver calls the other services with its own credentials (the experiment service's token, a
writer: the least role its calls need), never the caller's. A step given the caller's deadline
gives each downstream call at most the time that is left.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from activekd.client import SelectionClient, make_channel
from activekd.errors import ActiveKDError, FailedPrecondition, shown
from activekd.experiment.oracle import SimulatedOracle, initial_labels
from activekd.experiment.stopping import (
    StopSignal,
    round_signal,
    should_stop,
    stop_reason,
    stop_set,
)
from activekd.ids import teacher_targets_pool_id
from activekd.seeds import round_seed
from activekd.selection.strategies import STRATEGY_INFO, probs_source
from activekd.state.experiment_spec import INPUT_ARRAY_KEY, ExperimentSpec
from activekd.state.experiments import Experiment, ExperimentStore, RoundState, TransitionAborted
from activekd.store import PoolStore
from activekd.v1 import teacher_pb2, teacher_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from activekd.wire.channel import ClientCredentials

log = logging.getLogger("activekd.driver")

#: The work of one state, given the caller's deadline (``time.monotonic()``, None: none):
#: returns the state to move to and the round record's updates.
StepWork = Callable[[Experiment, float | None], tuple[RoundState, dict[str, Any]]]


class DeadlineExceeded(ActiveKDError):
    """The caller's deadline passed before (or during) a call to another service."""

    code = "DEADLINE_EXCEEDED"


#: statuses of a downstream call that say something about this service, not about the request
_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


@dataclass
class ServiceTargets:
    """Where the other services listen (host:port)."""

    selection: str
    teacher: str
    trainer: str


class Driver:
    """Runs transitions of experiments stored in Redis, calling the other services."""

    def __init__(
        self,
        experiments: ExperimentStore,
        pools: PoolStore,
        targets: ServiceTargets,
        *,
        timeout: float = 3600.0,
        credentials: ClientCredentials | None = None,
    ) -> None:
        """``credentials`` of the calls to the other services (None: ``ACTIVEKD_CLIENT_*``)."""
        self.experiments, self.pools, self.timeout = experiments, pools, timeout
        creds = ClientCredentials.from_env() if credentials is None else credentials
        self.selection = SelectionClient(targets.selection, timeout=timeout, credentials=creds)
        self._channels = {
            "teacher": make_channel(targets.teacher, credentials=creds),
            "trainer": make_channel(targets.trainer, credentials=creds),
        }
        self.teacher = teacher_pb2_grpc.TeacherServiceStub(self._channels["teacher"])
        self.trainer = trainer_pb2_grpc.TrainerServiceStub(self._channels["trainer"])

    def _timeout(self, deadline: float | None, service: str) -> float:
        """The timeout of a downstream call: ``self.timeout``, or less when the caller's deadline
        is nearer."""
        if deadline is None:
            return self.timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"the caller's deadline passed before the call to the {service}")
        return min(self.timeout, left)

    @contextlib.contextmanager
    def _calling(self, service: str) -> Iterator[None]:
        """Downstream refusals of this service's own credentials, and deadlines, as clear errors
        (other statuses propagate unchanged)."""
        try:
            yield
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code in _REFUSED:
                log.error(
                    "the %s service refused this service's credentials (%s)",
                    service,
                    code.name,
                    extra={"service": service, "code": code.name},
                )
                raise FailedPrecondition(
                    f"the {service} service refused the experiment service's credentials "
                    f"({code.name}); give it a writer token (ACTIVEKD_CLIENT_TOKEN_FILE)"
                ) from exc
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(f"the call to the {service} ran out of time") from exc
            raise

    # ---- creation ---------------------------------------------------------------------------
    def create(
        self,
        spec: ExperimentSpec,
        experiment_id: str | None = None,
        valid_strategies: set[str] | None = None,
    ) -> Experiment:
        """Validate the spec against the pool and store the experiment with its initial labels."""
        spec.validate(valid_strategies)
        meta = self.pools.describe(spec.pool_id)
        if spec.input_array not in meta.arrays:
            raise FailedPrecondition(
                f"pool {shown(spec.pool_id)} has no {shown(spec.input_array)} array for the "
                f"student: it has {', '.join(sorted(meta.arrays))}; set "
                f"student_config.{INPUT_ARRAY_KEY} to the one the student reads"
            )
        if spec.test_pool_id:
            self.pools.describe(spec.test_pool_id)
        ids, labels = list(spec.initial_item_ids), list(spec.initial_labels)
        if spec.initial_per_class:
            if "labels" not in meta.arrays:
                raise FailedPrecondition(
                    f"initial_per_class needs ground-truth 'labels' in pool {spec.pool_id!r}; "
                    "or give initial_item_ids and initial_labels"
                )
            ids, labels = initial_labels(
                [str(i) for i in self.pools.item_ids(spec.pool_id)],
                np.asarray(self.pools.open_array(spec.pool_id, "labels")),
                spec.initial_per_class,
                spec.seed,
                spec.num_classes,
            )
        else:
            self.pools.rows_for(spec.pool_id, ids)  # every given id must be in the pool
        if spec.simulated_oracle and "labels" not in meta.arrays:
            raise FailedPrecondition(
                f"simulated_oracle needs a 'labels' array in pool {spec.pool_id!r}"
            )
        return self.experiments.create(spec, experiment_id, ids, labels, pool_size=meta.num_items)

    # ---- one transition ---------------------------------------------------------------------
    def step(
        self,
        experiment_id: str,
        expected_version: int | None = None,
        *,
        deadline: float | None = None,
    ) -> tuple[RoundState, Experiment]:
        """Perform the current state's work and advance once; returns (from_state, experiment).

        ``deadline`` (``time.monotonic()``) bounds every call to another service.
        """
        exp = self.experiments.get(experiment_id)
        if expected_version and exp.version != expected_version:
            raise TransitionAborted(
                f"experiment is at version {exp.version}, not {expected_version}",
                state=exp.state,
                round_=exp.current_round,
                version=exp.version,
            )
        work: dict[RoundState, StepWork] = {
            RoundState.CREATED: self._teacher,
            RoundState.TEACHER_SCORED: self._train,
            RoundState.STUDENT_TRAINED: self._score,
            RoundState.POOL_SCORED: self._select,
            RoundState.SELECTED: self._request_labels,
            RoundState.AWAITING_LABELS: self._oracle,
            RoundState.LABELS_COMPLETE: self._next_round,
        }
        if exp.state is RoundState.FINISHED:
            raise FailedPrecondition(f"experiment {experiment_id!r} is FINISHED")
        if exp.state is RoundState.STUDENT_TRAINED and exp.current_round >= exp.spec.num_rounds:
            to, updates = RoundState.FINISHED, dict[str, Any]()
        else:
            to, updates = work[exp.state](exp, deadline)
        if to is RoundState.LABELS_COMPLETE and exp.state is RoundState.AWAITING_LABELS:
            # the oracle's labels completed the round (the label submission moved the state)
            return exp.state, self.experiments.get(experiment_id)
        try:
            new = self.experiments.advance(
                experiment_id,
                exp.state,
                to,
                expected_version=exp.version,
                updates=updates,
                message=_signal_message(updates),
            )
        except TransitionAborted as exc:
            log.info(
                "another driver advanced first",
                extra={"experiment": experiment_id, "state": exc.state.name},
            )
            new = self.experiments.get(experiment_id)
        log.info(
            "advanced",
            extra={
                "experiment": experiment_id,
                "round": exp.current_round,
                "from": exp.state.name,
                "to": new.state.name,
            },
        )
        return exp.state, new

    def run(
        self, experiment_id: str, on_step: Callable[[RoundState, Experiment], None] | None = None
    ) -> Experiment:
        """Step until FINISHED (needs the simulated oracle or labels arriving meanwhile)."""
        exp = self.experiments.get(experiment_id)
        while exp.state is not RoundState.FINISHED:
            before, exp = self.step(experiment_id)
            if on_step is not None:
                on_step(before, exp)
        return exp

    # ---- the work of each state -------------------------------------------------------------
    def _first_round(self, exp: Experiment) -> dict[str, Any]:
        return {
            "teacher_pool_id": exp.rounds[0].teacher_pool_id,
            "teacher_test_pool_id": exp.rounds[0].extra.get("teacher_test_pool_id", ""),
        }

    def _score_with_teacher(
        self, exp: Experiment, pool_id: str, dataset: str, deadline: float | None
    ) -> str:
        req = teacher_pb2.ScorePoolRequest(
            source=teacher_pb2.ImageSource(pool_id=pool_id),
            dataset=dataset,
            experiment_id=exp.experiment_id,
        )
        last = None
        with self._calling("teacher"):
            for msg in self.teacher.ScorePool(req, timeout=self._timeout(deadline, "teacher")):
                last = msg
        if last is None or not last.pool.pool_id:
            raise FailedPrecondition(f"teacher ScorePool of {pool_id!r} returned no pool")
        return str(last.pool.pool_id)

    def _check_teacher_features(self, strategy: str, teacher_pool_id: str) -> None:
        """FailedPrecondition, saying what to do, when ``strategy`` selects on the teacher's
        features and the teacher pool holds none."""
        if "features" not in self.pools.describe(teacher_pool_id).arrays:
            raise FailedPrecondition(
                f"strategy {strategy!r} selects on the teacher's features, but teacher "
                f"pool {teacher_pool_id!r} has none: let the teacher score the pool "
                "(ScorePool keeps features unless a probabilities-only cache answers; use "
                "force), upload a 'features' array with the probs, or pick a strategy that "
                "needs no teacher features (e.g. pcoreset)"
            )

    def _teacher(
        self, exp: Experiment, deadline: float | None
    ) -> tuple[RoundState, dict[str, Any]]:
        spec, t0 = exp.spec, time.perf_counter()
        if exp.current_round > 0:
            first = self._first_round(exp)
            return RoundState.TEACHER_SCORED, {
                "teacher_pool_id": first["teacher_pool_id"],
                "extra": {"teacher_test_pool_id": first["teacher_test_pool_id"]},
            }
        tcfg = spec.teacher_config
        pool = tcfg.get("pool_id") or self._score_with_teacher(
            exp, spec.pool_id, spec.dataset or spec.pool_id, deadline
        )
        test = ""
        if spec.test_pool_id:
            test = tcfg.get("test_pool_id") or self._score_with_teacher(
                exp, spec.test_pool_id, (spec.dataset or spec.pool_id) + "-test", deadline
            )
        for pid in filter(None, (pool, test)):
            self.pools.describe(pid)
        info = STRATEGY_INFO.get(spec.strategy)
        if info is not None and info.teacher_features and spec.num_rounds > 0:  # before round 0
            # trains, not after (an experiment of 0 rounds never selects)
            self._check_teacher_features(spec.strategy, pool)
        return RoundState.TEACHER_SCORED, {
            "teacher_pool_id": pool,
            "extra": {"teacher_test_pool_id": test},
            "timings": {"teacher_seconds": time.perf_counter() - t0},
        }

    def _train(self, exp: Experiment, deadline: float | None) -> tuple[RoundState, dict[str, Any]]:
        rec, spec = exp.rounds[exp.current_round], exp.spec
        first = self._first_round(exp)
        req = trainer_pb2.TrainRoundRequest(
            experiment_id=exp.experiment_id,
            round=exp.current_round,
            seed=round_seed(spec.seed, exp.current_round),
            pool_id=spec.pool_id,
            teacher_pool_id=rec.teacher_pool_id or first["teacher_pool_id"],
            test_pool_id=spec.test_pool_id,
            teacher_test_pool_id=first["teacher_test_pool_id"],
            # a strategy on the teacher's probabilities selects on the round's targets
            write_teacher_targets=probs_source(spec.strategy) == "teacher",
        )
        result = None
        with self._calling("trainer"):
            for msg in self.trainer.TrainRound(req, timeout=self._timeout(deadline, "trainer")):
                if msg.WhichOneof("event") == "result":
                    result = msg.result
        if result is None:
            raise FailedPrecondition("trainer ended the round without a result")
        updates: dict[str, Any] = {
            "checkpoint_id": result.checkpoint.checkpoint_id,
            "timings": {"train_seconds": result.train_seconds},
        }
        ev = result.evaluation
        if spec.test_pool_id:
            updates["accuracy"] = ev.accuracy
            extra = {"accuracy_ce": ev.ce_accuracy}
            for name in ("kd_accuracy", "teacher_accuracy"):
                if ev.HasField(name):
                    extra[name] = getattr(ev, name)
            if ev.HasField("teacher_agreement"):
                updates["teacher_agreement"] = ev.teacher_agreement
            updates["extra"] = extra
        return RoundState.STUDENT_TRAINED, updates

    def _predict_pool(self, exp: Experiment, deadline: float | None) -> str:
        """The trainer scores the pool with the round's student; returns the scores' pool id."""
        with self._calling("trainer"):
            resp = self.trainer.PredictPool(
                trainer_pb2.PredictPoolRequest(
                    experiment_id=exp.experiment_id,
                    round=exp.current_round,
                    pool_id=exp.spec.pool_id,
                ),
                timeout=self._timeout(deadline, "trainer"),
            )
        return str(resp.pool.pool_id)

    def _score(self, exp: Experiment, deadline: float | None) -> tuple[RoundState, dict[str, Any]]:
        t0 = time.perf_counter()
        student_pool = self._predict_pool(exp, deadline)
        updates: dict[str, Any] = {
            "student_pool_id": student_pool,
            "timings": {"predict_seconds": time.perf_counter() - t0},
        }
        signal = self._stop_signal(exp, student_pool)
        if signal.stability is not None:
            updates["stability"] = signal.stability
        if signal.teacher_agreement is not None:
            updates["stop_set_teacher_agreement"] = signal.teacher_agreement
        return RoundState.POOL_SCORED, updates

    def _aligned_probs(self, pool_id: str, item_ids: np.ndarray) -> np.ndarray | None:
        """Pool ``pool_id``'s ``probs`` in the row order of ``item_ids`` (None: missing)."""
        if not pool_id or "probs" not in self.pools.describe(pool_id).arrays:
            return None
        index = self.pools.row_index(pool_id)
        try:
            rows = [index[str(i)] for i in item_ids]
        except KeyError:
            return None
        return np.asarray(self.pools.open_array(pool_id, "probs"))[rows]

    def _stop_signal(self, exp: Experiment, student_pool: str) -> StopSignal:
        """Stability against the previous round's student and agreement with the teacher on
        the experiment's stop set (``activekd.experiment.stopping``)."""
        ids = self.pools.item_ids(student_pool)
        rows = stop_set(len(ids), exp.spec.seed, exp.spec.stopping.stop_set_size)
        current = np.asarray(self.pools.open_array(student_pool, "probs"))
        r = exp.current_round
        previous = None
        if r > 0:
            previous = self._aligned_probs(exp.rounds[r - 1].student_pool_id, ids)
        rec = exp.rounds[r]
        teacher = self._aligned_probs(
            rec.teacher_pool_id or self._first_round(exp)["teacher_pool_id"], ids
        )
        return round_signal(current, previous, teacher, rows)

    def _select(self, exp: Experiment, deadline: float | None) -> tuple[RoundState, dict[str, Any]]:
        rec, spec = exp.rounds[exp.current_round], exp.spec
        stabilities = [r.stability for r in exp.rounds]
        if should_stop(stabilities, spec.stopping):
            return RoundState.FINISHED, {"stop_reason": stop_reason(stabilities, spec.stopping)}
        labels = self.experiments.labels(exp.experiment_id)
        labeled = self.experiments.labeled_ids(exp.experiment_id)
        pool_size = exp.pool_size or self.pools.describe(spec.pool_id).num_items
        budget = min(spec.budget_per_round, pool_size - len(labeled))
        request_id = f"{exp.experiment_id}/round-{exp.current_round}"
        if budget <= 0:
            return RoundState.SELECTED, {
                "selected_item_ids": [],
                "selection_request_id": request_id,
            }
        # typiclust & co. cover the teacher's embedding of the pool (its ``features`` array)
        info = STRATEGY_INFO.get(spec.strategy)
        features_pool_id = ""
        if info is not None and info.teacher_features:
            features_pool_id = rec.teacher_pool_id or self._first_round(exp)["teacher_pool_id"]
            self._check_teacher_features(spec.strategy, features_pool_id)
        # the probabilities the registry names: the student's (combined) or its CE head's
        # (``ce_probs``), both in the round's scored pool, or the round's distillation targets
        # the trainer wrote in the pool's rows (adapted when the experiment adapts: what the
        # in-process loop passes too)
        source = probs_source(spec.strategy)
        probs_pool_id, probs_array = rec.student_pool_id, ""
        if source == "ce":
            probs_array = "ce_probs"
        elif source == "teacher":
            probs_pool_id = teacher_targets_pool_id(exp.experiment_id, exp.current_round)
        with self._calling("selection"):
            res = self.selection.select_batch(
                spec.strategy,
                budget,
                pool_id=probs_pool_id,
                probs_array=probs_array,
                features_pool_id=features_pool_id,
                labeled=labeled,
                labels=[labels[i] for i in labeled],
                seed=round_seed(spec.seed, exp.current_round),
                request_id=request_id,
                experiment_id=exp.experiment_id,
                round=exp.current_round,
                timeout=self._timeout(deadline, "selection"),
            )
        return RoundState.SELECTED, {
            "selected_item_ids": res.item_ids,
            "selection_request_id": request_id,
            "timings": {"select_seconds": res.total_seconds},
        }

    def _request_labels(
        self, exp: Experiment, deadline: float | None
    ) -> tuple[RoundState, dict[str, Any]]:
        return RoundState.AWAITING_LABELS, {}

    def _oracle(self, exp: Experiment, deadline: float | None) -> tuple[RoundState, dict[str, Any]]:
        pending = self.experiments.pending_ids(exp.experiment_id)
        if not pending:
            return RoundState.LABELS_COMPLETE, {}
        if not exp.spec.simulated_oracle:
            raise FailedPrecondition(
                f"round {exp.current_round} waits for {len(pending)} label(s): call SubmitLabels"
            )
        pool = exp.spec.pool_id
        oracle = SimulatedOracle(
            [str(i) for i in self.pools.item_ids(pool)],
            np.asarray(self.pools.open_array(pool, "labels")),
        )
        self.experiments.submit_labels(exp.experiment_id, oracle.label(pending))
        return RoundState.LABELS_COMPLETE, {}

    def _next_round(
        self, exp: Experiment, deadline: float | None
    ) -> tuple[RoundState, dict[str, Any]]:
        return RoundState.CREATED, {}

    def close(self) -> None:
        """Close the channels to the selection, teacher and trainer services."""
        self.selection.close()
        for channel in self._channels.values():
            channel.close()


def _signal_message(updates: dict[str, Any]) -> str:
    """The stopping signal in the transition's event message (WatchExperiment shows it)."""
    parts = []
    if "stability" in updates:
        parts.append(f"stability {updates['stability']:.4f}")
    if "stop_set_teacher_agreement" in updates:
        parts.append(f"stop-set teacher agreement {updates['stop_set_teacher_agreement']:.4f}")
    if updates.get("stop_reason"):
        parts.append(f"stopped early: {updates['stop_reason']}")
    return "; ".join(parts)


__all__ = ["DeadlineExceeded", "Driver", "ServiceTargets"]
