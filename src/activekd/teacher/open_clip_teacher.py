"""Zero-shot CLIP teacher on any open_clip architecture.

Weights come from a pretrained tag (HF cache; the hub must be reachable or the cache seeded), a
local checkpoint file, or a ``local-dir:`` folder (``open_clip_config.json`` + weights file, as
:func:`activekd.teacher.clip_train.export_local_dir` writes). The head is
``softmax(exp(logit_scale) * norm(image) @ norm(text).T / temperature)`` where the text weights
are a prompt ensemble: per class, the mean of the normalised template embeddings, renormalised.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from activekd.data.templates import SIMPLE_TEMPLATES, validate_class_names, validate_templates
from activekd.devices import autocast, dtype_name, resolve_precision, torch_device
from activekd.errors import FailedPrecondition, InvalidArgument, NotFound
from activekd.teacher.adapt import AdaptedHead, fit_clap_head
from activekd.teacher.base import BaseTeacher, TeacherIdentity, TeacherOutput, sha256_state_dict
from activekd.teacher.clip_configs import register_model_configs
from activekd.teacher.clip_train import model_preprocess
from activekd.teacher.head_pool import TeacherHead
from activekd.teacher.preprocess import Preprocess

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = "random"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@dataclass
class ClipBackbone:
    """A loaded open_clip model shared by every class set / head built on it."""

    model: Any
    tokenizer: Any
    preprocess: Preprocess
    model_label: str
    weights_hash: str
    device: torch.device
    compute_dtype: torch.dtype
    logit_scale: float
    lock: threading.Lock

    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        """Normalised float32 image embeddings for a uint8 batch."""
        x = self.preprocess(images, self.device)
        with self.lock, torch.inference_mode(), autocast(self.device, self.compute_dtype):
            feats = self.model.encode_image(x)
        return F.normalize(feats.float(), dim=-1)

    def text_weights(
        self, class_names: Sequence[str], templates: Sequence[str], chunk: int = 256
    ) -> torch.Tensor:
        """Prompt-ensemble zero-shot weights (C, D), float32, unit rows."""
        prompts = [t.format(c) for c in class_names for t in templates]
        embs = []
        with self.lock, torch.inference_mode(), autocast(self.device, self.compute_dtype):
            for i in range(0, len(prompts), chunk):
                tokens = self.tokenizer(prompts[i : i + chunk]).to(self.device)
                embs.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        e = torch.cat(embs).view(len(class_names), len(templates), -1).mean(dim=1)
        return F.normalize(e, dim=-1)


def _is_pathlike(value: str) -> bool:
    return "/" in value or "\\" in value or value.lower().endswith(_CHECKPOINT_SUFFIXES)


def load_clip_backbone(
    model_name: str,
    pretrained: str | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    invert: bool = False,
    cache_dir: str | None = None,
) -> ClipBackbone:
    """Load an open_clip model and tokenizer; errors say what to fix.

    ``model_name``: a registered architecture (``open_clip.list_models()``, including
    ``tiny-clip-32``), ``local-dir:/folder`` or ``hf-hub:org/repo``. ``pretrained`` (only without
    a schema): a tag (``open_clip.list_pretrained_tags_by_model``), a checkpoint path, or
    ``"random"`` for untrained weights (tests only).
    """
    import open_clip

    register_model_configs()
    if not model_name:
        raise InvalidArgument("open_clip model name is empty", field="model")
    schema, ident = open_clip.factory.parse_model_name(model_name)
    kwargs: dict[str, Any] = {}
    label = model_name
    if schema == "local-dir":
        folder = Path(ident).expanduser().resolve()
        if not folder.is_dir():
            raise NotFound(f"open_clip local-dir {folder} does not exist", field="model")
        if not (folder / "open_clip_config.json").is_file():
            raise NotFound(
                f"open_clip local-dir {folder} has no open_clip_config.json "
                "(write one with activekd.teacher.clip_train.export_local_dir)",
                field="model",
            )
        if pretrained not in (None, ""):
            raise InvalidArgument(
                f"pretrained={pretrained!r} is ignored with a local-dir model; leave it empty",
                field="pretrained",
            )
        model_name = label = f"local-dir:{folder}"
    elif schema == "hf-hub":
        if pretrained not in (None, ""):
            raise InvalidArgument(
                f"pretrained={pretrained!r} is ignored with an hf-hub model; leave it empty",
                field="pretrained",
            )
    else:
        if model_name.replace("/", "-") not in open_clip.list_models():
            known = ", ".join(open_clip.list_models()[:12])
            raise InvalidArgument(
                f"unknown open_clip architecture {model_name!r}; known include {known}, ... "
                "(open_clip.list_models()), or use local-dir:/folder or hf-hub:org/repo",
                field="model",
            )
        if pretrained in (None, ""):
            raise InvalidArgument(
                f"open_clip model {model_name!r} needs weights: a pretrained tag "
                f"({open_clip.list_pretrained_tags_by_model(model_name)}), a checkpoint path, "
                f"or {RANDOM_WEIGHTS!r} for an untrained model",
                field="pretrained",
            )
        if pretrained == RANDOM_WEIGHTS:
            label = f"{model_name}@random"
        elif Path(pretrained).expanduser().is_file():
            kwargs["pretrained"] = str(Path(pretrained).expanduser().resolve())
            label = model_name
        elif _is_pathlike(pretrained):
            raise NotFound(f"checkpoint file {pretrained} does not exist", field="pretrained")
        elif pretrained not in open_clip.list_pretrained_tags_by_model(model_name):
            raise NotFound(
                f"{pretrained!r} is neither a checkpoint file nor a pretrained tag of "
                f"{model_name} (tags: {open_clip.list_pretrained_tags_by_model(model_name)})",
                field="pretrained",
            )
        else:
            kwargs["pretrained"] = pretrained
            label = f"{model_name}:{pretrained}"
    dev = torch_device(device)
    compute_dtype = resolve_precision(precision, dev)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model, _, _ = open_clip.create_model_and_transforms(
                model_name, device="cpu", cache_dir=cache_dir, **kwargs
            )
            tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
    except Exception as exc:  # open_clip and torch.load raise many types; map them all
        if schema == "hf-hub" or (
            "pretrained" in kwargs and not Path(kwargs["pretrained"]).is_file()
        ):
            raise FailedPrecondition(
                f"could not get weights {label}: {exc}. The HF hub must be reachable or its "
                "cache pre-seeded; or pass a checkpoint path / local-dir: folder"
            ) from exc
        raise InvalidArgument(f"could not load open_clip model {label}: {exc}") from exc
    model.eval()
    weights_hash = sha256_state_dict(model.state_dict())
    model.to(dev)
    preprocess = model_preprocess(model, invert=invert)
    log.info(
        "loaded open_clip %s (weights sha256 %s...) on %s, compute %s",
        label,
        weights_hash[:12],
        dev,
        dtype_name(compute_dtype),
    )
    return ClipBackbone(
        model=model,
        tokenizer=tokenizer,
        preprocess=preprocess,
        model_label=label,
        weights_hash=weights_hash,
        device=dev,
        compute_dtype=compute_dtype,
        logit_scale=float(model.logit_scale.detach().float().exp().item()),
        lock=threading.Lock(),
    )


class OpenClipTeacher(BaseTeacher):
    """Zero-shot (or few-shot adapted) CLIP teacher; views with other classes share the model."""

    def __init__(
        self,
        backbone: ClipBackbone,
        class_names: Sequence[str],
        templates: Sequence[str] | None = None,
        *,
        temperature: float = 1.0,
        batch_size: int = 64,
        head: AdaptedHead | None = None,
    ) -> None:
        super().__init__(batch_size)
        if not np.isfinite(temperature) or temperature <= 0:
            raise InvalidArgument(f"temperature {temperature} must be > 0", field="temperature")
        self._bb = backbone
        self._class_names = validate_class_names(class_names)
        self._templates = validate_templates(templates if templates else SIMPLE_TEMPLATES)
        self._temperature = float(temperature)
        self._zero_shot = backbone.text_weights(self._class_names, self._templates)
        self._adapted = head
        if head is not None and head.weights.shape != tuple(self._zero_shot.shape):
            raise InvalidArgument(
                f"adapted head {head.weights.shape} does not fit {tuple(self._zero_shot.shape)}"
            )
        self._weights = (
            torch.from_numpy(head.weights).to(backbone.device)
            if head is not None
            else self._zero_shot
        )
        self._identity = self._make_identity()

    @classmethod
    def load(
        cls,
        model_name: str,
        pretrained: str | None = None,
        *,
        class_names: Sequence[str],
        templates: Sequence[str] | None = None,
        temperature: float = 1.0,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 64,
        invert: bool = False,
        cache_dir: str | None = None,
    ) -> OpenClipTeacher:
        """Load the model (see :func:`load_clip_backbone`) and build the zero-shot head."""
        bb = load_clip_backbone(
            model_name,
            pretrained,
            device=device,
            precision=precision,
            invert=invert,
            cache_dir=cache_dir,
        )
        return cls(bb, class_names, templates, temperature=temperature, batch_size=batch_size)

    def _make_identity(self) -> TeacherIdentity:
        if self._adapted is None:
            head = (
                f"zero-shot prompt-ensemble logit_scale={self._bb.logit_scale:.6g} "
                f"T={self._temperature:g}"
            )
        else:
            head = f"{self._adapted.describe()} logit_scale={self._bb.logit_scale:.6g} " + (
                f"T={self._temperature:g}"
            )
        return TeacherIdentity(
            backend="open_clip",
            model=self._bb.model_label,
            weights_hash=self._bb.weights_hash,
            class_names=self._class_names,
            templates=self._templates,
            preprocessing=self._bb.preprocess.describe(),
            head=head,
            description=(
                f"open_clip {self._bb.model_label} zero-shot CLIP teacher"
                + (" with a few-shot adapted head" if self._adapted else "")
            ),
        )

    # -- Teacher ------------------------------------------------------------------------------
    @property
    def identity(self) -> TeacherIdentity:
        return self._identity

    @property
    def feature_dim(self) -> int:
        return int(self._zero_shot.shape[1])

    @property
    def device(self) -> str:
        return str(self._bb.device)

    @property
    def dtype(self) -> str:
        return dtype_name(self._bb.compute_dtype)

    @property
    def backbone(self) -> ClipBackbone:
        return self._bb

    @property
    def logit_scale(self) -> float:
        return self._bb.logit_scale

    @property
    def temperature(self) -> float:
        return self._temperature

    @property
    def zero_shot_weights(self) -> np.ndarray:
        """The prompt-ensemble text weights (C, D)."""
        return self._zero_shot.detach().cpu().numpy().copy()

    @property
    def zero_shot_head(self) -> TeacherHead:
        """The zero-shot head as stored beside a scored pool (:mod:`activekd.teacher.head_pool`):
        the prompt-ensemble weights and the effective scale ``logit_scale / temperature``."""
        return TeacherHead(
            self.zero_shot_weights,
            float(self._bb.logit_scale) / self._temperature,
            tuple(self._class_names),
        )

    @property
    def adapted_head(self) -> AdaptedHead | None:
        return self._adapted

    def _predict_batch(self, images: np.ndarray) -> TeacherOutput:
        feats = self.image_features(images)
        return self.predict_features(feats)

    def image_features(self, images: np.ndarray) -> torch.Tensor:
        """Normalised image embeddings (B, D) float32 on the teacher's device."""
        return self._bb.encode_images(images)

    def predict_features(self, features: torch.Tensor | np.ndarray) -> TeacherOutput:
        """Probabilities from precomputed (normalised) image features, e.g. cached ones."""
        if not isinstance(features, torch.Tensor):
            features = torch.from_numpy(np.asarray(features, dtype=np.float32))
        f = features.float().to(self._bb.device)
        if f.ndim != 2 or f.shape[1] != self.feature_dim:
            raise InvalidArgument(
                f"features {tuple(f.shape)} must be (B, {self.feature_dim})", field="features"
            )
        f = F.normalize(f, dim=-1)
        logits = self._bb.logit_scale * f @ self._weights.T
        probs = (logits / self._temperature).softmax(dim=-1)
        return TeacherOutput(
            probs.cpu().numpy().astype(np.float32), f.cpu().numpy().astype(np.float32)
        )

    def with_classes(
        self, class_names: Sequence[str], templates: Sequence[str] | None = None
    ) -> OpenClipTeacher:
        """A zero-shot view for other classes/templates (templates default to the current ones).

        An adapted head is dropped: it was fitted for the old classes.
        """
        if templates is not None and len(templates) == 0:
            templates = None
        return OpenClipTeacher(
            self._bb,
            class_names,
            tuple(templates) if templates is not None else self._templates,
            temperature=self._temperature,
            batch_size=self._batch_size,
        )

    def _adopt(self, other: BaseTeacher) -> None:
        assert isinstance(other, OpenClipTeacher)
        self.__dict__.update(other.__dict__)

    def adapt(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        *,
        penalty: float | str = "auto",
        steps: int = 300,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> OpenClipTeacher:
        """A new teacher whose head is fitted CLAP-style on labeled ``features`` (N, D) — the
        teacher's own normalised image features — starting from (and pulled towards) the
        zero-shot prototypes. ``self`` is unchanged."""
        head = fit_clap_head(
            features,
            labels,
            self.zero_shot_weights,
            logit_scale=self._bb.logit_scale,
            penalty=penalty,
            steps=steps,
            lr=lr,
            seed=seed,
        )
        return OpenClipTeacher(
            self._bb,
            self._class_names,
            self._templates,
            temperature=self._temperature,
            batch_size=self._batch_size,
            head=head,
        )
