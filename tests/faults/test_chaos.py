"""Seeded chaos: during a two-round experiment SIGKILL Redis (AOF on) and every service at random
points of random advances, restart each, and the experiment still ends with exactly the
selections, labeled counts and labeled set of an uninterrupted run, with no duplicate pick and no
temp, unreadable or damaged file in the store. More seeds: ``bench/chaos.py --seeds N``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import (
    TARGETS,
    USED_BY_STEP,
    ChaosStack,
    RunResult,
    run_chaos,
    scan_store,
    schedule,
    step_state,
)

pytestmark = pytest.mark.slow
SEEDS = (11, 12, 13)  # CI; bench/chaos.py runs more


def test_the_kill_schedule_is_seeded_and_hits_every_target() -> None:
    a = schedule(3, 5, 17)
    assert a == schedule(3, 5, 17) and a != schedule(4, 5, 17)
    assert sorted(t for _, t, _ in a) == sorted(TARGETS)
    steps = [s for s, _, _ in a]
    assert steps == sorted(set(steps)) and all(0 <= s < 17 for s in steps)
    assert all(0.0 <= d <= 1.0 for _, _, d in a)
    for seed in range(20):  # every kill of a stage service lands on a step that calls it
        for step, target, _ in schedule(seed, 5, 17):
            if target in USED_BY_STEP:
                assert step_state(step) in USED_BY_STEP[target], (seed, step, target)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_kills_end_exactly_like_a_clean_run(
    chaos_stack: ChaosStack, clean_run: RunResult, seed: int
) -> None:
    run = run_chaos(chaos_stack, f"chaos-{seed}", seed, kills=len(TARGETS))
    assert sorted(k["target"] for k in run.kills) == sorted(TARGETS), run.kills
    assert run.selections == clean_run.selections, run.kills
    assert run.labeled_counts == clean_run.labeled_counts == [10, 14, 18]
    assert run.labels == clean_run.labels
    assert run.label_order == clean_run.label_order
    assert len(run.label_order) == len(set(run.label_order)) == 18  # no duplicate pick
    # the driver loop only ever saw success or a retryable status
    assert set(run.codes) <= {"OK", "UNAVAILABLE", "ABORTED"}, (run.codes, run.kills)
    for name, svc in chaos_stack.services.services.items():
        assert svc.proc is not None and svc.proc.poll() is None, name
    assert chaos_stack.services.redis is not None
    scan = scan_store(
        Path(chaos_stack.services.root) / "store", chaos_stack.services.redis.client()
    )
    assert scan.clean, scan
    assert scan.committed_pools >= 4 and scan.checkpoints >= 3, scan
    print(f"seed {seed}: {run.seconds:.1f} s, codes {dict(run.codes)}, kills {run.kills}, {scan}")
