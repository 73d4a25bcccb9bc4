"""``StudentConfig``: every knob of the DHO student and its training round, as plain data.

Serialisable to/from dict and JSON (unknown keys are rejected, so a typo never goes unnoticed).
Defaults follow the paper's protocol (DHO: CE head + KD head, KL at T=2, AdamW lr 1e-3, batch 64)
scaled to a CPU-friendly round for 28x28 images.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from activekd.errors import InvalidArgument, shown

LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


@dataclass
class StudentConfig:
    """Model, loss, optimisation and runtime settings of one student.

    Model: ``backbone`` names an entry of ``activekd.student.backbones.BACKBONES``;
    ``backbone_args`` overrides its defaults (e.g. ``{"weights_path": ..., "resize": 64}`` for
    resnet18, ``{"input_dim": 512, "hidden": [256]}`` for mlp). ``kd=False`` is the CE-only
    ablation: no KD head, prediction = softmax(ce).

    Loss: ``ce_weight * CE(labeled) + kd_weight * (kd_labeled_weight * KL_T(labeled) +
    kd_unlabeled_weight * KL_T(unlabeled)) * T^2`` with ``T = temperature``; the teacher's
    probabilities are softened with the same T (``softmax(log p / T)``, i.e. its logits / T) when
    ``soften_teacher``.

    Prediction: ``alpha * softmax(ce) + (1 - alpha) * softmax(kd / beta)``.

    Optimisation: AdamW (``lr``, ``weight_decay``), ``steps`` updates, each on
    ``batch_size_labeled`` labeled rows drawn with replacement and ``batch_size_unlabeled`` pool
    rows taken in order from a reshuffled cycle over the pool; linear warm-up over
    ``warmup_fraction * steps`` steps then ``lr_schedule``. ``augment``: random crop (zero padding
    ``augment_padding``) + horizontal flip (``augment_flip``) of image batches.

    ``score_batch_size``: batch for ``score_pool``/``evaluate`` (0: 128 on CPU, where small batches
    stay in cache and ran 3-5x faster than 1024 here, and 1024 on CUDA).

    Runtime: ``seed`` fixes init, sampling, augmentation and dropout (same seed and threads on CPU
    -> identical weights); ``threads`` > 0 sets torch CPU threads for the call; ``precision``
    ``auto`` = bf16 autocast on CUDA (fp16 where bf16 is unsupported), fp32 on CPU;
    ``channels_last`` runs image backbones in NHWC memory format (1.4-2x faster small_cnn training
    and inference on this CPU, same numbers up to float rounding).
    """

    num_classes: int = 10
    backbone: str = "small_cnn"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    kd: bool = True
    # loss
    temperature: float = 2.0
    ce_weight: float = 0.5
    kd_weight: float = 0.5
    kd_labeled_weight: float = 1.0
    kd_unlabeled_weight: float = 1.0
    soften_teacher: bool = True
    # prediction
    alpha: float = 0.5
    beta: float = 1.0
    # optimisation
    steps: int = 400
    batch_size_labeled: int = 64
    batch_size_unlabeled: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    lr_schedule: str = "cosine"
    grad_clip: float = 0.0
    augment: bool = False
    augment_padding: int = 2
    augment_flip: bool = True
    # runtime
    seed: int = 0
    threads: int = 0
    precision: str = "auto"
    channels_last: bool = True
    log_every: int = 10
    score_batch_size: int = 0

    # ------------------------------------------------------------------ validation
    def validate(self) -> StudentConfig:
        """Raises InvalidArgument naming the first bad field; returns self."""
        from activekd.student.backbones import BACKBONES

        def bad(name: str, msg: str) -> InvalidArgument:
            return InvalidArgument(f"student config: {name} {msg}", field=name)

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        if not is_int(self.num_classes) or self.num_classes < 2:
            raise bad("num_classes", f"= {shown(self.num_classes)} must be an integer >= 2")
        if self.backbone not in BACKBONES:
            raise bad(
                "backbone",
                f"{shown(self.backbone)} is unknown: use one of {', '.join(sorted(BACKBONES))}",
            )
        if not isinstance(self.backbone_args, dict):
            raise bad("backbone_args", "must be a dict")
        unknown = set(self.backbone_args) - set(BACKBONES[self.backbone].defaults)
        if unknown:
            raise bad(
                "backbone_args",
                f"has keys {sorted(unknown)} unknown to {self.backbone}: "
                f"valid keys are {sorted(BACKBONES[self.backbone].defaults)}",
            )
        for name in ("kd", "soften_teacher", "augment", "augment_flip", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        if not is_num(self.temperature) or self.temperature <= 0:
            raise bad("temperature", f"= {shown(self.temperature)} must be > 0")
        for name in ("ce_weight", "kd_weight", "kd_labeled_weight", "kd_unlabeled_weight"):
            v = getattr(self, name)
            if not is_num(v) or v < 0:
                raise bad(name, f"= {shown(v)} must be a finite number >= 0")
        if self.ce_weight == 0 and (not self.kd or self.kd_weight == 0):
            raise bad("ce_weight", "and kd_weight are both 0: nothing to train")
        if not is_num(self.alpha) or not 0.0 <= self.alpha <= 1.0:
            raise bad("alpha", f"= {shown(self.alpha)} must be in [0, 1]")
        if not is_num(self.beta) or self.beta <= 0:
            raise bad("beta", f"= {shown(self.beta)} must be > 0")
        for name in ("steps", "batch_size_labeled", "batch_size_unlabeled", "log_every"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise bad(name, f"= {shown(v)} must be an integer >= 1")
        if not is_int(self.score_batch_size) or self.score_batch_size < 0:
            raise bad(
                "score_batch_size",
                f"= {shown(self.score_batch_size)} must be an integer >= 0 (0: auto)",
            )
        if not is_num(self.lr) or self.lr <= 0:
            raise bad("lr", f"= {shown(self.lr)} must be > 0")
        if not is_num(self.weight_decay) or self.weight_decay < 0:
            raise bad("weight_decay", f"= {shown(self.weight_decay)} must be >= 0")
        if not is_num(self.warmup_fraction) or not 0.0 <= self.warmup_fraction < 1.0:
            raise bad("warmup_fraction", f"= {shown(self.warmup_fraction)} must be in [0, 1)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad(
                "lr_schedule", f"{shown(self.lr_schedule)} must be one of {list(LR_SCHEDULES)}"
            )
        if not is_num(self.grad_clip) or self.grad_clip < 0:
            raise bad("grad_clip", f"= {shown(self.grad_clip)} must be >= 0 (0 = off)")
        if not is_int(self.augment_padding) or self.augment_padding < 0:
            raise bad("augment_padding", f"= {shown(self.augment_padding)} must be an integer >= 0")
        if not is_int(self.seed) or self.seed < 0:
            raise bad("seed", f"= {shown(self.seed)} must be an integer >= 0")
        if not is_int(self.threads) or self.threads < 0:
            raise bad("threads", f"= {shown(self.threads)} must be an integer >= 0 (0 = default)")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"{shown(self.precision)} must be one of {list(PRECISIONS)}")
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (a deep copy)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self, **kwargs: Any) -> str:
        """JSON text; ``kwargs`` go to ``json.dumps`` (e.g. ``indent=2``)."""
        return json.dumps(self.to_dict(), sort_keys=True, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        """Builds and validates a config; unknown keys raise InvalidArgument."""
        if not isinstance(data, dict):
            raise InvalidArgument(
                f"student config must be a JSON object, got {type(data).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidArgument(
                f"student config has unknown keys {unknown}; valid keys: {sorted(names)}",
                field=unknown[0],
            )
        return cls(**json.loads(json.dumps(data))).validate()

    @classmethod
    def from_json(cls, text: str | bytes) -> StudentConfig:
        """Parses JSON text written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"student config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> StudentConfig:
        """A validated copy with ``changes`` applied (``backbone_args`` deep-copied)."""
        out = dataclasses.replace(self, **changes)
        out.backbone_args = copy.deepcopy(out.backbone_args)
        return out.validate()

    def resolved_backbone_args(self) -> dict[str, Any]:
        """The backbone's defaults updated with ``backbone_args``."""
        from activekd.student.backbones import BACKBONES

        out = dict(BACKBONES[self.backbone].defaults)
        out.update(self.backbone_args)
        return out
