"""train_round mechanics: determinism, warm start, NaN detection, progress, schedule, sampling."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from activekd.errors import FailedPrecondition, InvalidArgument
from activekd.student import (
    BACKBONES,
    BackboneSpec,
    NonFiniteLossError,
    StudentConfig,
    TrainEvent,
    lr_factor,
    score_pool,
    train_round,
)
from activekd.student.data import random_crop_flip

TINY_CNN = {"widths": [4, 8], "pool": 2, "hidden": 16}


def tiny_cfg(**kw: Any) -> StudentConfig:
    base: dict[str, Any] = dict(
        num_classes=4,
        backbone_args=dict(TINY_CNN),
        steps=6,
        batch_size_labeled=4,
        batch_size_unlabeled=8,
        log_every=2,
    )
    base.update(kw)
    return StudentConfig(**base)


def run(tiny: Any, cfg: StudentConfig, **kw: Any):  # type: ignore[no-untyped-def]
    return train_round(
        cfg,
        None,
        tiny.y[tiny.labeled],
        tiny.x,
        tiny.t,
        labeled_rows=tiny.labeled,
        device="cpu",
        **kw,
    )


def test_same_seed_identical_weights_and_predictions(tiny: Any) -> None:
    a = run(tiny, tiny_cfg(seed=3, augment=True))
    b = run(tiny, tiny_cfg(seed=3, augment=True))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    np.testing.assert_array_equal(
        score_pool(a.model, tiny.x).probs, score_pool(b.model, tiny.x).probs
    )

    c = run(tiny, tiny_cfg(seed=4, augment=True))
    assert not torch.equal(sa["ce_head.weight"], c.state_dict()["ce_head.weight"])


def test_training_does_not_touch_global_rng(tiny: Any) -> None:
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    run(tiny, tiny_cfg())
    assert torch.equal(torch.rand(3), expected)


def test_warm_start_continues_from_state(tiny: Any) -> None:
    first = run(tiny, tiny_cfg(steps=40, lr=3e-3))
    state = first.state_dict()
    before = {k: v.clone() for k, v in state.items()}
    # One step at a tiny learning rate: the weights stay at the warm start, far from a fresh init.
    warm = run(tiny, tiny_cfg(steps=1, lr=1e-9, seed=7, warmup_fraction=0.0), init_state=state)
    fresh = run(tiny, tiny_cfg(steps=1, lr=1e-9, seed=7, warmup_fraction=0.0))
    w_warm = warm.state_dict()["kd_head.weight"]
    w_fresh = fresh.state_dict()["kd_head.weight"]
    assert torch.allclose(w_warm, state["kd_head.weight"], atol=1e-6)
    assert (w_fresh - state["kd_head.weight"]).abs().max() > 1e-2
    # Its first loss is the trained model's, lower than a fresh model's.
    assert warm.history[0].loss < fresh.history[0].loss
    for k in before:  # the caller's state dict is not modified
        assert torch.equal(before[k], state[k])


def test_warm_start_mismatch_is_invalid(tiny: Any) -> None:
    state = run(tiny, tiny_cfg(steps=1)).state_dict()
    with pytest.raises(InvalidArgument, match="init_state"):
        run(tiny, tiny_cfg(steps=1, kd=False), init_state=state)  # no kd_head in this student
    state["ce_head.weight"] = torch.zeros(3, 16)
    with pytest.raises(InvalidArgument, match=r"ce_head\.weight"):
        run(tiny, tiny_cfg(steps=1), init_state=state)


class _PoisonNet(nn.Module):
    """Linear features that turn NaN on forward call number ``nan_at``."""

    def __init__(self, dim: int, nan_at: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, 8)
        self.calls = 0
        self.nan_at = nan_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.lin(x)
        return out * float("nan") if self.calls == self.nan_at else out


def test_nan_loss_stops_with_step_number(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = BackboneSpec(
        name="poison_test",
        input_kind="vector",
        description="test only",
        build=lambda a: (_PoisonNet(int(a["input_dim"]), int(a["nan_at"])), 8),
        defaults={"input_dim": None, "nan_at": 4},
    )
    monkeypatch.setitem(BACKBONES, "poison_test", spec)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    t = rng.dirichlet(np.ones(3), 20).astype(np.float32)
    events: list[TrainEvent] = []
    cfg = StudentConfig(num_classes=3, backbone="poison_test", steps=10, log_every=1)
    with pytest.raises(NonFiniteLossError) as err:
        train_round(cfg, x[:6], y[:6], x, t, teacher_probs_labeled=t[:6], progress=events.append)
    assert err.value.step == 4
    assert isinstance(err.value, FailedPrecondition)
    assert "step 4/10" in str(err.value)
    assert [e.step for e in events] == [1, 2, 3]  # no event for the failed step


def test_progress_events_and_cancellation(tiny: Any) -> None:
    events: list[TrainEvent] = []
    res = run(tiny, tiny_cfg(steps=7, log_every=3), progress=events.append)
    assert [e.step for e in events] == [3, 6, 7]
    assert all(e.total_steps == 7 for e in events)
    assert events[-1].loss == res.history[-1].loss
    assert events[-1].fraction == 1.0
    assert [h.step for h in res.history] == list(range(1, 8))

    class Cancelled(Exception):
        pass

    def cancel(ev: TrainEvent) -> None:
        if ev.step >= 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        run(tiny, tiny_cfg(steps=50, log_every=1), progress=cancel)


def test_warmup_then_cosine_schedule(tiny: Any) -> None:
    cfg = tiny_cfg(steps=20, warmup_fraction=0.25, lr=1e-2)
    assert lr_factor(0, cfg) == pytest.approx(0.2)  # 5 warm-up steps: 1/5, 2/5, ...
    assert lr_factor(4, cfg) == pytest.approx(1.0)
    assert lr_factor(5, cfg) == pytest.approx(1.0)
    assert lr_factor(19, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 14 / 15)))
    res = run(tiny, cfg)
    np.testing.assert_allclose(
        [h.lr for h in res.history], [1e-2 * lr_factor(s, cfg) for s in range(20)], rtol=1e-9
    )
    const = tiny_cfg(steps=20, warmup_fraction=0.0, lr_schedule="constant")
    assert {lr_factor(s, const) for s in range(20)} == {1.0}


def test_small_sets_are_resampled_and_cycled(tiny: Any) -> None:
    # One labeled row (batch 8 draws it with replacement) and a 5-row pool cycled for batch 12.
    cfg = tiny_cfg(steps=3, batch_size_labeled=8, batch_size_unlabeled=12)
    res = train_round(
        cfg,
        tiny.x[:1],
        tiny.y[:1],
        tiny.x[:5],
        tiny.t[:5],
        teacher_probs_labeled=tiny.t[:1],
        device="cpu",
    )
    assert len(res.history) == 3 and all(math.isfinite(h.loss) for h in res.history)
    assert res.stats["pool"] == 5 and res.stats["labeled"] == 1


def test_threads_are_set_and_restored(tiny: Any) -> None:
    before = torch.get_num_threads()  # 1 (autouse fixture)
    want = 2 if before == 1 else 1
    seen: list[int] = []
    run(
        tiny,
        tiny_cfg(threads=want, steps=2, log_every=1),
        progress=lambda e: seen.append(torch.get_num_threads()),
    )
    assert seen == [want, want]
    assert torch.get_num_threads() == before


def test_kd_off_needs_no_teacher(tiny: Any) -> None:
    res = train_round(tiny_cfg(kd=False), tiny.x[:8], tiny.y[:8], None, None, device="cpu")
    assert res.model.kd_head is None
    assert all(h.kd == 0.0 for h in res.history)
    assert score_pool(res.model, tiny.x).kd_logits is None


def test_random_crop_flip() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    assert torch.equal(random_crop_flip(x, 0, False, gen), x)
    out = random_crop_flip(x, 2, True, torch.Generator().manual_seed(1))
    again = random_crop_flip(x, 2, True, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and torch.equal(out, again)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):  # every output is a shifted (possibly flipped) window of its own input
        windows = [
            padded[i, :, dy : dy + 8, dx : dx + 8].flip(-1)
            if f
            else padded[i, :, dy : dy + 8, dx : dx + 8]
            for dy in range(5)
            for dx in range(5)
            for f in (False, True)
        ]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not torch.equal(out, x)
