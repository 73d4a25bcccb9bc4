"""One active-learning round of student training (DHO), as the paper runs it.

Every round starts from a freshly initialised student (or ``init_state`` for a warm start), then
runs ``config.steps`` AdamW updates. Each step draws ``batch_size_labeled`` labeled rows with
replacement and takes the next ``batch_size_unlabeled`` rows of a reshuffled cycle over the pool;
both go through the backbone in one forward pass. Learning rate: linear warm-up, then constant or
cosine. A NaN/inf loss stops the round with :class:`NonFiniteLossError` (nothing is returned, so a
service keeps its previous checkpoint).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from activekd.arrays import check_probabilities
from activekd.devices import autocast, resolve_precision, torch_device, torch_threads
from activekd.errors import InvalidArgument
from activekd.student.backbones import BACKBONES
from activekd.student.config import StudentConfig
from activekd.student.data import (
    random_crop_flip,
    to_tensor,
    validate_labels,
    validate_x,
)
from activekd.student.errors import NonFiniteLossError
from activekd.student.model import DualHeadStudent, StudentOutput, build_student, dho_loss


class TrainStep(NamedTuple):
    """One history row: 1-based ``step``, total ``loss``, ``ce`` and ``kd`` parts, ``lr`` used."""

    step: int
    loss: float
    ce: float
    kd: float
    lr: float


@dataclass(frozen=True)
class TrainEvent:
    """What the progress callback receives every ``config.log_every`` steps and at the end."""

    step: int
    total_steps: int
    loss: float
    ce: float
    kd: float
    lr: float
    elapsed_seconds: float

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps


ProgressFn = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    """A trained student (eval mode, on ``device``), the resolved config it was built from and the
    per-step history."""

    model: DualHeadStudent
    config: StudentConfig
    history: list[TrainStep]
    elapsed_seconds: float
    device: str
    stats: dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's weights as CPU tensors (a copy)."""
        return {
            k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in self.model.state_dict().items()
        }

    @property
    def final_loss(self) -> float:
        return self.history[-1].loss


def resolve_config(config: StudentConfig, x_example: np.ndarray | None) -> StudentConfig:
    """Validated copy of ``config`` with data-dependent backbone args filled in (``mlp``'s
    ``input_dim`` from the inputs' width)."""
    config.validate()
    spec = BACKBONES[config.backbone]
    if spec.input_kind == "vector" and config.backbone_args.get("input_dim") is None:
        if x_example is None or x_example.ndim != 2:
            shape = None if x_example is None else x_example.shape
            raise InvalidArgument(
                f"{config.backbone}: cannot infer input_dim from inputs of shape {shape}; "
                "pass feature vectors (N, D) or set backbone_args.input_dim"
            )
        args = dict(config.backbone_args)
        args["input_dim"] = int(x_example.shape[1])
        return config.replace(backbone_args=args)
    return config.replace()


def lr_factor(step: int, config: StudentConfig) -> float:
    """Multiplier of ``config.lr`` at 0-based ``step``: linear warm-up, then the schedule."""
    warm = int(config.warmup_fraction * config.steps)
    if step < warm:
        return (step + 1) / warm
    if config.lr_schedule == "constant":
        return 1.0
    span = max(1, config.steps - warm)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / span))


def _load_init_state(model: DualHeadStudent, init_state: Mapping[str, Any]) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(init_state))
    unexpected = sorted(set(init_state) - set(own))
    if missing or unexpected:
        raise InvalidArgument(
            f"init_state does not fit this student: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]} (same backbone, num_classes and kd needed)",
            field="init_state",
        )
    for k, v in init_state.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise InvalidArgument(
                f"init_state[{k!r}] has shape {tuple(v.shape)}, the student needs "
                f"{tuple(own[k].shape)}",
                field="init_state",
            )
    model.load_state_dict(dict(init_state))


def train_round(
    config: StudentConfig,
    x_labeled: np.ndarray | None,
    y_labeled: np.ndarray,
    x_all: np.ndarray | None,
    teacher_probs_all: np.ndarray | None,
    *,
    teacher_probs_labeled: np.ndarray | None = None,
    labeled_rows: np.ndarray | None = None,
    init_state: Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
    device: str | torch.device | None = "auto",
) -> TrainResult:
    """Trains one round's student from scratch (or from ``init_state``) and returns it.

    Args:
        config: model/loss/optimisation settings (validated here).
        x_labeled: labeled inputs (images or vectors, see ``activekd.student.data``); may be None
            when ``labeled_rows`` is given.
        y_labeled: their int labels in ``[0, num_classes)``.
        x_all: the pool the KD head distils on (labeled rows may be included); None only with
            ``kd=False``.
        teacher_probs_all: ``(len(x_all), num_classes)`` teacher probabilities; None with kd off.
        teacher_probs_labeled: teacher probabilities of the labeled rows (for KL on labeled rows);
            defaults to ``teacher_probs_all[labeled_rows]``.
        labeled_rows: row ids of the labeled examples in ``x_all``; fills ``x_labeled`` and
            ``teacher_probs_labeled`` when those are None.
        init_state: warm start from this state dict instead of a fresh init.
        progress: called with a :class:`TrainEvent` every ``log_every`` steps and after the last;
            an exception raised there aborts training and propagates (use it to cancel).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or a torch device.

    Raises:
        InvalidArgument: bad config or inputs (message names the field).
        NonFiniteLossError: NaN/inf loss at some step (``.step``).
    """
    t0 = time.perf_counter()
    dev = torch_device(device)
    for name, arr in (("x_labeled", x_labeled), ("x_all", x_all)):
        if arr is not None and not isinstance(arr, np.ndarray):
            raise InvalidArgument(
                f"{name} must be a numpy array, got {type(arr).__name__}", field=name
            )
    spec_probe = x_all if x_all is not None else x_labeled
    if labeled_rows is not None:
        if x_all is None:
            raise InvalidArgument("labeled_rows needs x_all", field="labeled_rows")
        rows = np.asarray(labeled_rows)
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise InvalidArgument("labeled_rows must be a 1-D integer array", field="labeled_rows")
        if rows.size and (rows.min() < 0 or rows.max() >= x_all.shape[0]):
            raise InvalidArgument(
                f"labeled_rows must be in [0, {x_all.shape[0]})", field="labeled_rows"
            )
        if x_labeled is None:
            x_labeled = np.asarray(x_all[rows])
        if teacher_probs_labeled is None and teacher_probs_all is not None:
            teacher_probs_labeled = np.asarray(teacher_probs_all[rows])
    if x_labeled is None:
        raise InvalidArgument("x_labeled is missing (pass it or labeled_rows)", field="x_labeled")
    cfg = resolve_config(config, spec_probe if spec_probe is not None else x_labeled)
    kind = BACKBONES[cfg.backbone].input_kind
    in_dim = cfg.backbone_args.get("input_dim") if kind == "vector" else None

    validate_x(x_labeled, kind, "x_labeled", in_dim)
    y = validate_labels(y_labeled, x_labeled.shape[0], cfg.num_classes)
    use_unlabeled = cfg.kd and cfg.kd_unlabeled_weight > 0
    use_kd_labeled = cfg.kd and cfg.kd_labeled_weight > 0
    if use_unlabeled:
        if x_all is None or teacher_probs_all is None:
            raise InvalidArgument(
                "kd is on: x_all and teacher_probs_all are required (or set kd=false)",
                field="teacher_probs_all",
            )
        if x_all.shape[0] == 0:
            raise InvalidArgument("x_all is empty", field="x_all")
        validate_x(x_all, kind, "x_all", in_dim)
        if x_all.shape[1:] != x_labeled.shape[1:]:
            raise InvalidArgument(
                f"x_labeled rows have shape {x_labeled.shape[1:]}, x_all rows {x_all.shape[1:]}",
                field="x_labeled",
            )
        check_probabilities(
            teacher_probs_all,
            "teacher_probs_all",
            rows=x_all.shape[0],
            classes=cfg.num_classes,
            classes_owner="the student",
        )
    if use_kd_labeled:
        if teacher_probs_labeled is None:
            raise InvalidArgument(
                "kd is on: teacher_probs_labeled (or labeled_rows into x_all) is required for the "
                "KL term on labeled rows (or set kd_labeled_weight=0)",
                field="teacher_probs_labeled",
            )
        check_probabilities(
            teacher_probs_labeled,
            "teacher_probs_labeled",
            rows=x_labeled.shape[0],
            classes=cfg.num_classes,
            classes_owner="the student",
        )
    amp_dtype = resolve_precision(cfg.precision, dev)

    rng_devices = []
    if dev.type == "cuda":
        rng_devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    with torch_threads(cfg.threads), torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(cfg.seed)
        if dev.type == "cuda":
            torch.cuda.manual_seed_all(cfg.seed)
        model = build_student(cfg)
        if init_state is not None:
            _load_init_state(model, init_state)
        model.to(dev)
        model.train()
        history = _fit(
            model,
            cfg,
            kind,
            x_labeled,
            y,
            teacher_probs_labeled,
            x_all,
            teacher_probs_all,
            use_unlabeled,
            use_kd_labeled,
            dev,
            amp_dtype,
            progress,
            t0,
        )
    model.eval()
    elapsed = time.perf_counter() - t0
    return TrainResult(
        model=model,
        config=cfg,
        history=history,
        elapsed_seconds=elapsed,
        device=str(dev),
        stats={
            "steps": float(cfg.steps),
            "labeled": float(x_labeled.shape[0]),
            "pool": float(x_all.shape[0]) if x_all is not None else 0.0,
            "seconds": elapsed,
        },
    )


def _fit(
    model: DualHeadStudent,
    cfg: StudentConfig,
    kind: str,
    x_lab: np.ndarray,
    y_lab: np.ndarray,
    t_lab: np.ndarray | None,
    x_all: np.ndarray | None,
    t_all: np.ndarray | None,
    use_unlabeled: bool,
    use_kd_labeled: bool,
    dev: torch.device,
    amp_dtype: torch.dtype,
    progress: ProgressFn | None,
    t0: float,
) -> list[TrainStep]:
    rng = np.random.default_rng(cfg.seed)
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    y_all = torch.from_numpy(y_lab).to(dev)
    n_lab = x_lab.shape[0]
    n_all = x_all.shape[0] if x_all is not None else 0
    perm = rng.permutation(n_all) if use_unlabeled else np.empty(0, np.int64)
    cursor = 0
    history: list[TrainStep] = []

    for step in range(cfg.steps):
        li = rng.integers(0, n_lab, size=cfg.batch_size_labeled)
        xb = to_tensor(x_lab[li], kind, dev)
        yb = y_all[torch.from_numpy(li).to(dev)]
        tl = None
        if use_kd_labeled:
            assert t_lab is not None
            tl = torch.from_numpy(np.asarray(t_lab[li], np.float32)).to(dev)
        tu = None
        if use_unlabeled:
            assert x_all is not None and t_all is not None
            take = []
            need = cfg.batch_size_unlabeled
            while need > 0:
                if cursor >= n_all:
                    perm = rng.permutation(n_all)
                    cursor = 0
                part = perm[cursor : cursor + need]
                take.append(part)
                cursor += part.size
                need -= part.size
            ui = np.concatenate(take)
            xu = to_tensor(x_all[ui], kind, dev)
            tu = torch.from_numpy(np.asarray(t_all[ui], np.float32)).to(dev)
            xb = torch.cat([xb, xu])
        if cfg.augment and kind == "image":
            xb = random_crop_flip(xb, cfg.augment_padding, cfg.augment_flip, aug_gen)

        with autocast(dev, amp_dtype):
            out = model(xb)
        b = cfg.batch_size_labeled
        out_l = StudentOutput(
            out.ce_logits[:b],
            None if out.kd_logits is None else out.kd_logits[:b],
            out.features[:b],
        )
        out_u = None
        if use_unlabeled and out.kd_logits is not None:
            out_u = StudentOutput(out.ce_logits[b:], out.kd_logits[b:], out.features[b:])
        parts = dho_loss(cfg, out_l, yb, tl, out_u, tu)
        loss_v, ce_v, kd_v = torch.stack([parts.total, parts.ce, parts.kd]).detach().tolist()
        if not (math.isfinite(loss_v) and math.isfinite(ce_v) and math.isfinite(kd_v)):
            raise NonFiniteLossError(
                f"training diverged at step {step + 1}/{cfg.steps}: loss {loss_v}, ce {ce_v}, "
                f"kd {kd_v}; lower lr, set grad_clip or check the inputs",
                step=step + 1,
            )
        lr_now = opt.param_groups[0]["lr"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(parts.total).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        history.append(TrainStep(step + 1, loss_v, ce_v, kd_v, float(lr_now)))
        if progress is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
            progress(
                TrainEvent(
                    step + 1, cfg.steps, loss_v, ce_v, kd_v, float(lr_now), time.perf_counter() - t0
                )
            )

    for name, p in model.state_dict().items():
        if p.dtype.is_floating_point and not bool(torch.isfinite(p).all()):
            raise NonFiniteLossError(
                f"training diverged: weight {name} holds NaN/inf after step {cfg.steps}",
                step=cfg.steps,
            )
    return history
