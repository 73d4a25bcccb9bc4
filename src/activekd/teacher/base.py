"""The teacher interface shared by every backend: identity, outputs, per-item prediction."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from activekd.errors import ActiveKDError, InvalidArgument
from activekd.teacher.images import ImageInput, to_image_array, validate_image_batch

FINGERPRINT_HEX = 20


@dataclass(frozen=True)
class TeacherIdentity:
    """Everything that determines a teacher's outputs; ``fingerprint`` hashes all of it.

    ``head`` names the classification head (zero-shot, adapted, label-map sum) and its
    parameters; ``description`` is free text and is not part of the fingerprint.
    """

    backend: str
    model: str
    weights_hash: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    preprocessing: str
    head: str = ""
    description: str = ""

    @property
    def fingerprint(self) -> str:
        """Stable hex digest of all fields except ``description`` (safe in paths and keys)."""
        payload = self._fields()
        payload.pop("description")
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_HEX]

    def _fields(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["templates"] = list(self.templates)
        return d

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including ``fingerprint``."""
        d = self._fields()
        d["fingerprint"] = self.fingerprint
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherIdentity:
        """Inverse of :meth:`to_dict`; InvalidArgument when a stored fingerprint disagrees."""
        ident = cls(
            backend=str(data["backend"]),
            model=str(data["model"]),
            weights_hash=str(data["weights_hash"]),
            class_names=tuple(data["class_names"]),
            templates=tuple(data["templates"]),
            preprocessing=str(data["preprocessing"]),
            head=str(data.get("head", "")),
            description=str(data.get("description", "")),
        )
        stored = data.get("fingerprint")
        if stored is not None and stored != ident.fingerprint:
            raise InvalidArgument(
                f"identity fingerprint {stored} does not match its fields ({ident.fingerprint})"
            )
        return ident


@dataclass(frozen=True)
class TeacherOutput:
    """``probs`` float32 (B, C), rows summing to 1; ``features`` float32 (B, D) (D may be 0)."""

    probs: np.ndarray
    features: np.ndarray

    def __post_init__(self) -> None:
        if self.probs.ndim != 2 or self.features.ndim != 2:
            raise InvalidArgument(
                f"probs and features must be 2-D, got {self.probs.shape} and {self.features.shape}"
            )
        if self.probs.shape[0] != self.features.shape[0]:
            raise InvalidArgument(
                f"probs has {self.probs.shape[0]} rows but features {self.features.shape[0]}"
            )

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    def rows(self, index: np.ndarray | slice) -> TeacherOutput:
        """A row subset."""
        return TeacherOutput(self.probs[index], self.features[index])

    @staticmethod
    def concat(parts: Sequence[TeacherOutput], num_classes: int, feature_dim: int) -> TeacherOutput:
        """Stack outputs row-wise (an empty list gives zero rows of the given widths)."""
        if not parts:
            return TeacherOutput(
                np.zeros((0, num_classes), np.float32), np.zeros((0, feature_dim), np.float32)
            )
        return TeacherOutput(
            np.concatenate([p.probs for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.features for p in parts]).astype(np.float32, copy=False),
        )


@dataclass
class ItemPrediction:
    """One image's result: probabilities/features, or the error that image alone raised."""

    index: int
    probs: np.ndarray | None = None
    features: np.ndarray | None = None
    error: ActiveKDError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class TeacherDescription:
    """What ``DescribeTeacher`` returns."""

    identity: TeacherIdentity
    device: str
    dtype: str
    num_classes: int
    feature_dim: int
    max_batch_size: int
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Teacher(Protocol):
    """A zero-shot teacher: images in, class probabilities and features out."""

    @property
    def identity(self) -> TeacherIdentity: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def feature_dim(self) -> int: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def max_batch_size(self) -> int: ...

    def predict(self, images: np.ndarray) -> TeacherOutput: ...
    def predict_items(
        self, items: Sequence[ImageInput], include_features: bool = True
    ) -> list[ItemPrediction]: ...
    def set_classes(
        self, class_names: Sequence[str], templates: Sequence[str] | None = None
    ) -> TeacherIdentity: ...
    def with_classes(
        self, class_names: Sequence[str], templates: Sequence[str] | None = None
    ) -> Teacher: ...
    def describe(self) -> TeacherDescription: ...


class BaseTeacher(ABC):
    """Shared behaviour: input validation, batching into ``max_batch_size``, per-item errors.

    Subclasses implement :meth:`_predict_batch` (a validated uint8 batch of at most
    ``max_batch_size`` images) and :meth:`with_classes`.
    """

    def __init__(self, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise InvalidArgument(f"batch_size {batch_size} must be >= 1", field="batch_size")
        self._batch_size = int(batch_size)

    # -- to implement ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def identity(self) -> TeacherIdentity: ...

    @property
    @abstractmethod
    def feature_dim(self) -> int: ...

    @abstractmethod
    def _predict_batch(self, images: np.ndarray) -> TeacherOutput: ...

    @abstractmethod
    def with_classes(
        self, class_names: Sequence[str], templates: Sequence[str] | None = None
    ) -> BaseTeacher:
        """A teacher for other classes/templates sharing this one's model (self is unchanged)."""

    @abstractmethod
    def _adopt(self, other: BaseTeacher) -> None:
        """Take over ``other``'s class-dependent state (used by :meth:`set_classes`)."""

    # -- shared ---------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.identity.class_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.identity.class_names

    @property
    def fingerprint(self) -> str:
        return self.identity.fingerprint

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def dtype(self) -> str:
        return "float32"

    @property
    def max_batch_size(self) -> int:
        return self._batch_size

    def set_classes(
        self, class_names: Sequence[str], templates: Sequence[str] | None = None
    ) -> TeacherIdentity:
        """Switch this teacher to other classes (and templates); returns the new identity."""
        self._adopt(self.with_classes(class_names, templates))
        return self.identity

    def predict(self, images: np.ndarray) -> TeacherOutput:
        """Probabilities and features for a uint8 batch (B, H, W) or (B, H, W, 1|3)."""
        batch = validate_image_batch(images)
        parts = [
            self._predict_batch(batch[i : i + self._batch_size])
            for i in range(0, batch.shape[0], self._batch_size)
        ]
        return TeacherOutput.concat(parts, self.num_classes, self.feature_dim)

    def predict_items(
        self, items: Sequence[ImageInput], include_features: bool = True
    ) -> list[ItemPrediction]:
        """Predict images of any sizes/formats; a bad image gets its own error, not the call.

        Items are encoded bytes (PNG/JPEG) or uint8 arrays (H, W) / (H, W, 1|3). Valid images
        are grouped by shape and run in batches.
        """
        results = [ItemPrediction(index=i) for i in range(len(items))]
        groups: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for i, item in enumerate(items):
            try:
                arr = to_image_array(item)
            except ActiveKDError as exc:
                results[i].error = exc
                continue
            groups.setdefault(arr.shape, []).append((i, arr))
        for members in groups.values():
            out = self.predict(np.stack([a for _, a in members]))
            for row, (i, _) in enumerate(members):
                results[i].probs = out.probs[row]
                results[i].features = out.features[row] if include_features else None
        return results

    def describe(self) -> TeacherDescription:
        """Identity plus runtime facts (device, dtype, sizes)."""
        return TeacherDescription(
            identity=self.identity,
            device=self.device,
            dtype=self.dtype,
            num_classes=self.num_classes,
            feature_dim=self.feature_dim,
            max_batch_size=self.max_batch_size,
        )


def sha256_state_dict(state_dict: dict[str, Any]) -> str:
    """Hex sha256 of a torch state dict: names, dtypes, shapes and raw bytes in name order.

    Equal for the same weights however they were stored (checkpoint file, local dir, memory).
    """
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
