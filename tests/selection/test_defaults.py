"""The shared default strategy is a registered one, and every default points at it."""

from __future__ import annotations

from activekd.defaults import DEFAULT_STRATEGY
from activekd.experiment.loop import LoopConfig
from activekd.selection import STRATEGY_INFO
from activekd.state.experiment_spec import ExperimentSpec


def test_the_default_strategy_is_registered_and_used_everywhere() -> None:
    assert DEFAULT_STRATEGY in STRATEGY_INFO
    assert LoopConfig().strategy == DEFAULT_STRATEGY
    assert ExperimentSpec(pool_id="p").strategy == DEFAULT_STRATEGY


def test_teacher_feature_strategies_need_features() -> None:
    flagged = {n for n, i in STRATEGY_INFO.items() if i.teacher_features}
    assert flagged == {"typiclust", "probcover", "typiclust_pcoreset", "pcoreset_typical"}
    assert all(STRATEGY_INFO[n].needs_features for n in flagged)


def test_the_loop_gives_teacher_feature_strategies_the_teacher_features() -> None:
    assert LoopConfig(strategy="typiclust").features_source() == "teacher"
    assert LoopConfig(strategy="coreset").features_source() == "student"
    assert LoopConfig(strategy="typiclust", selection_features="student").features_source() == (
        "student"
    )
