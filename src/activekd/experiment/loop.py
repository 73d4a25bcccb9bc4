"""The ActiveKD loop in-process (no services): train the DHO student, evaluate, select, label.

This is the paper's protocol as a library call, used by the label-efficiency benchmark and by
platforms that run everything in one process. The gRPC path (``activekd.orchestration.driver``)
runs the same steps through the teacher, trainer and selection services.

Pairing: the initial labels depend only on ``seed``; the student's training seed and the selection
seed in round r are ``activekd.seeds.round_seed(seed, r)`` for every strategy, so strategies
differ only by what they select.

What the strategy sees (``LoopConfig``): ``selection_probs`` = ``combined`` (the student's
prediction, the paper's PCoreSet input), ``ce`` (softmax of the CE head only), ``teacher`` (the
round's teacher probabilities: zero-shot, or adapted) or ``auto`` (the default: what the
strategy's registry entry names, ``combined`` except for ``pcoreset_teacher``/``pcoreset_ce``);
``selection_features`` = ``student`` (its
penultimate features, as coreset/BADGE use them), ``teacher`` (the teacher's embedding of the
pool, which exists before any label) or ``auto`` (the default: ``teacher`` for the strategies the
registry marks ``teacher_features``, typiclust & co., else ``student``). ``teacher_adaptation``
``clap`` refits the teacher's linear head on the labels collected so far every round
(``activekd.teacher.adapt.TeacherAdapter``) and distils from the adapted teacher.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from activekd.defaults import DEFAULT_STRATEGY
from activekd.errors import InvalidArgument
from activekd.experiment.oracle import initial_labels
from activekd.experiment.stopping import round_signal, stop_set
from activekd.seeds import round_seed
from activekd.selection import select_batch
from activekd.selection.strategies import PROBS_SOURCES, STRATEGY_INFO, probs_source
from activekd.state.experiment_spec import TEACHER_ADAPTATIONS, StoppingRule
from activekd.student import StudentConfig, evaluate, score_pool, train_round

SELECTION_PROBS: tuple[str, ...] = ("auto", *PROBS_SOURCES)
SELECTION_FEATURES: tuple[str, ...] = ("auto", "student", "teacher")


@dataclass
class LoopConfig:
    """One active-learning run: strategy, rounds, budget, start, student and seed."""

    strategy: str = DEFAULT_STRATEGY
    rounds: int = 15
    budget: int = 10
    initial_per_class: int = 1
    seed: int = 0
    student: dict[str, Any] = field(default_factory=dict)
    selection_probs: str = "auto"
    selection_features: str = "auto"
    teacher_adaptation: str = "none"
    strategy_params: dict[str, float] = field(default_factory=dict)
    #: pool rows in the stop set of the stopping signal (``activekd.experiment.stopping``)
    stop_set_size: int = StoppingRule.stop_set_size

    def check(self, has_teacher_features: bool) -> None:
        """InvalidArgument for a setting outside its choices, or one that needs teacher features
        the caller did not give."""
        choices = {
            "selection_probs": SELECTION_PROBS,
            "selection_features": SELECTION_FEATURES,
            "teacher_adaptation": TEACHER_ADAPTATIONS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InvalidArgument(
                    f"{name} {getattr(self, name)!r}: use one of {', '.join(allowed)}", field=name
                )
        needs = self.features_source() == "teacher" or self.teacher_adaptation != "none"
        if needs and not has_teacher_features:
            raise InvalidArgument(
                "selection_features='teacher' and teacher_adaptation need the teacher's features "
                "of the pool (teacher_features_pool)",
                field="teacher_features_pool",
            )

    def probs_source(self) -> str:
        """``selection_probs`` with ``auto`` resolved: the probabilities the strategy's registry
        entry names (``combined`` for all but the named variants ``pcoreset_teacher`` and
        ``pcoreset_ce``), as the experiment service does."""
        if self.selection_probs != "auto":
            return self.selection_probs
        return probs_source(self.strategy)

    def features_source(self) -> str:
        """``selection_features`` with ``auto`` resolved: the teacher's for the strategies whose
        registry entry says so (typiclust & co., as the experiment service does), else the
        student's."""
        if self.selection_features != "auto":
            return self.selection_features
        info = STRATEGY_INFO.get(self.strategy)
        return "teacher" if info is not None and info.teacher_features else "student"

    def student_config(self, num_classes: int, round_: int) -> StudentConfig:
        """The round's student config (re-initialised each round with a paired seed)."""
        cfg = StudentConfig.from_dict({"num_classes": num_classes, **self.student})
        return cfg.replace(seed=round_seed(self.seed, round_))


@dataclass
class RoundResult:
    """Accuracy of the student trained on ``labeled`` labels."""

    round: int
    labeled: int
    accuracy: float
    accuracy_ce: float
    accuracy_kd: float | None
    teacher_agreement: float | None
    train_seconds: float
    select_seconds: float
    selected: list[int]
    teacher_accuracy: float | None = None
    adapt_seconds: float = 0.0
    #: stop-set agreement with the previous round's student (None in round 0) and with the
    #: teacher distilled from (``activekd.experiment.stopping``)
    stability: float | None = None
    stop_set_teacher_agreement: float | None = None
    #: the strategy's own stats for this round's pick (e.g. probcover's ``truncated_balls``,
    #: typiclust's ``new_cluster_picks``), timings left out; empty in the last round
    selection_stats: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressFn = Callable[[RoundResult], None]


def run_active_learning(
    cfg: LoopConfig,
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    teacher_pool: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    teacher_test: np.ndarray | None = None,
    *,
    teacher_features_pool: np.ndarray | None = None,
    teacher_features_test: np.ndarray | None = None,
    adapter: Any = None,
    progress: ProgressFn | None = None,
) -> list[RoundResult]:
    """Runs ``cfg.rounds`` selections (``cfg.rounds + 1`` trained students) and returns per round
    test accuracy vs number of labels. Labels come from ``y_pool`` (a simulated oracle).

    ``teacher_features_pool`` / ``_test``: the teacher's features (selection_features='teacher',
    teacher adaptation). ``adapter``: the teacher adapter for ``teacher_adaptation='clap'`` (an
    object with ``fit(features, rows, labels)`` and ``predict(features) -> probs``; default a
    ``TeacherAdapter`` fitted to the zero-shot teacher, see ``activekd.teacher.adapt``).
    """
    num_classes = teacher_pool.shape[1]
    if len(x_pool) != len(y_pool) or len(x_pool) != len(teacher_pool):
        raise InvalidArgument("x_pool, y_pool and teacher_pool must have the same number of rows")
    cfg.check(teacher_features_pool is not None)
    if teacher_features_pool is not None and len(teacher_features_pool) != len(y_pool):
        raise InvalidArgument("teacher_features_pool must have one row per pool row")
    if cfg.teacher_adaptation != "none" and adapter is None:
        from activekd.teacher.adapt import TeacherAdapter

        assert teacher_features_pool is not None  # cfg.check

        adapter = TeacherAdapter.from_zero_shot(teacher_features_pool, teacher_pool)
    ids = [str(i) for i in range(len(y_pool))]
    init_ids, _ = initial_labels(ids, y_pool, cfg.initial_per_class, cfg.seed, num_classes)
    labeled = np.asarray(sorted(int(i) for i in init_ids), dtype=np.int64)
    results: list[RoundResult] = []
    stop_rows = stop_set(len(y_pool), cfg.seed, cfg.stop_set_size)
    previous_probs: np.ndarray | None = None
    for r in range(cfg.rounds + 1):
        t_pool, t_test, t_acc, adapt_s = teacher_pool, teacher_test, None, 0.0
        if cfg.teacher_adaptation != "none":
            ta = time.perf_counter()
            adapter.fit(teacher_features_pool, labeled, y_pool[labeled])
            t_pool = adapter.predict(teacher_features_pool)
            if teacher_features_test is not None:
                t_test = adapter.predict(teacher_features_test)
            adapt_s = time.perf_counter() - ta
        if t_test is not None:
            t_acc = float((np.asarray(t_test).argmax(1) == y_test).mean())
        t0 = time.perf_counter()
        scfg = cfg.student_config(num_classes, r)
        trained = train_round(
            scfg,
            None,
            y_pool[labeled],
            x_pool,
            t_pool if scfg.kd else None,
            labeled_rows=labeled,
            device="auto",
        )
        ev = evaluate(trained.model, x_test, y_test, t_test)
        train_s = time.perf_counter() - t0
        picked: list[int] = []
        select_s = 0.0
        select_stats: dict[str, float] = {}
        t1 = time.perf_counter()
        scores = score_pool(trained.model, x_pool)
        signal = round_signal(scores.probs, previous_probs, t_pool, stop_rows)
        previous_probs = np.asarray(scores.probs)
        if r < cfg.rounds:
            budget = min(cfg.budget, len(y_pool) - len(labeled))
            res = select_batch(
                cfg.strategy,
                budget,
                probs=_selection_probs(cfg.probs_source(), scores, t_pool),
                features=(
                    teacher_features_pool if cfg.features_source() == "teacher" else scores.features
                ),
                labeled=labeled,
                labels=y_pool[labeled],
                seed=round_seed(cfg.seed, r),
                params=dict(cfg.strategy_params) or None,
            )
            picked = [int(i) for i in res.indices]
            select_s = time.perf_counter() - t1
            select_stats = {  # timings left out: results stay reproducible run to run
                str(k): float(v) for k, v in res.stats.items() if not k.endswith("seconds")
            }
        result = RoundResult(
            round=r,
            labeled=len(labeled),
            accuracy=ev["accuracy"],
            accuracy_ce=ev["accuracy_ce"],
            accuracy_kd=ev["accuracy_kd"],
            teacher_agreement=ev.get("teacher_agreement"),
            train_seconds=train_s,
            select_seconds=select_s,
            selected=picked,
            teacher_accuracy=t_acc,
            adapt_seconds=adapt_s,
            stability=signal.stability,
            stop_set_teacher_agreement=signal.teacher_agreement,
            selection_stats=select_stats,
        )
        results.append(result)
        if progress is not None:
            progress(result)
        labeled = np.sort(np.concatenate([labeled, np.asarray(picked, dtype=np.int64)]))
    return results


def _selection_probs(source: str, scores: Any, teacher_probs: np.ndarray) -> np.ndarray:
    """The probabilities the strategy sees (``LoopConfig.selection_probs``)."""
    if source == "combined":
        return np.asarray(scores.probs)
    if source == "teacher":
        return np.asarray(teacher_probs, dtype=np.float32)
    return np.asarray(scores.ce_probs)
