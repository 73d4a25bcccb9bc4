"""The ActiveKD loop in-process (no services): train the DHO student, evaluate, select, label.

This is the paper's protocol as a library call, used by the label-efficiency benchmark and by
platforms that run everything in one process. The gRPC path (``activekd.orchestration.driver``)
runs the same steps through the teacher, trainer and selection services.

Pairing: the initial labels depend only on ``seed``; the student's training seed and the selection
seed in round r are ``activekd.seeds.round_seed(seed, r)`` for every strategy, so strategies
differ only by what they select.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from activekd.errors import InvalidArgument
from activekd.experiment.oracle import initial_labels
from activekd.seeds import round_seed
from activekd.selection import select_batch
from activekd.student import StudentConfig, evaluate, score_pool, train_round


@dataclass
class LoopConfig:
    """One active-learning run: strategy, rounds, budget, start, student and seed."""

    strategy: str = "pcoreset"
    rounds: int = 15
    budget: int = 10
    initial_per_class: int = 1
    seed: int = 0
    student: dict[str, Any] = field(default_factory=dict)

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
    progress: ProgressFn | None = None,
) -> list[RoundResult]:
    """Runs ``cfg.rounds`` selections (``cfg.rounds + 1`` trained students) and returns per round
    test accuracy vs number of labels. Labels come from ``y_pool`` (a simulated oracle)."""
    num_classes = teacher_pool.shape[1]
    if len(x_pool) != len(y_pool) or len(x_pool) != len(teacher_pool):
        raise InvalidArgument("x_pool, y_pool and teacher_pool must have the same number of rows")
    ids = [str(i) for i in range(len(y_pool))]
    init_ids, _ = initial_labels(ids, y_pool, cfg.initial_per_class, cfg.seed, num_classes)
    labeled = np.asarray(sorted(int(i) for i in init_ids), dtype=np.int64)
    results: list[RoundResult] = []
    for r in range(cfg.rounds + 1):
        t0 = time.perf_counter()
        scfg = cfg.student_config(num_classes, r)
        trained = train_round(
            scfg,
            None,
            y_pool[labeled],
            x_pool,
            teacher_pool if scfg.kd else None,
            labeled_rows=labeled,
            device="auto",
        )
        ev = evaluate(trained.model, x_test, y_test, teacher_test)
        train_s = time.perf_counter() - t0
        picked: list[int] = []
        select_s = 0.0
        if r < cfg.rounds:
            t1 = time.perf_counter()
            scores = score_pool(trained.model, x_pool)
            budget = min(cfg.budget, len(y_pool) - len(labeled))
            res = select_batch(
                cfg.strategy,
                budget,
                probs=scores.probs,
                features=scores.features,
                labeled=labeled,
                labels=y_pool[labeled],
                seed=round_seed(cfg.seed, r),
            )
            picked = [int(i) for i in res.indices]
            select_s = time.perf_counter() - t1
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
        )
        results.append(result)
        if progress is not None:
            progress(result)
        labeled = np.sort(np.concatenate([labeled, np.asarray(picked, dtype=np.int64)]))
    return results
