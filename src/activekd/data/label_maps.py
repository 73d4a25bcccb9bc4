"""Maps from a target dataset's classes to sets of ImageNet-1k classes.

A label map turns any ImageNet classifier into a label-free teacher for the target classes:
``p(class) = sum of the ImageNet softmax over the class's ImageNet set``, renormalised. That is an
ImageNet classifier with a label map, not a vision-language model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from activekd.errors import InvalidArgument, NotFound

DATA_DIR = Path(__file__).resolve().parent
BUILTIN_LABEL_MAPS: dict[str, Path] = {
    "fashion-mnist": DATA_DIR / "fashion_mnist_imagenet_label_map.json",
}
NUM_IMAGENET_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 class names in the standard index order."""
    names = (DATA_DIR / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
    names = [n.strip() for n in names if n.strip()]
    if len(names) != NUM_IMAGENET_CLASSES:
        raise InvalidArgument(f"imagenet_classes.txt has {len(names)} names, expected 1000")
    return tuple(names)


@dataclass(frozen=True)
class LabelMap:
    """Target class names and, per class, the ImageNet indices whose probabilities it sums."""

    class_names: tuple[str, ...]
    imagenet_indices: tuple[tuple[int, ...], ...]
    target_dataset: str = ""
    source: str = ""
    measured: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.class_names:
            raise InvalidArgument("a label map needs at least one class", field="class_names")
        if len(self.class_names) != len(self.imagenet_indices):
            raise InvalidArgument(
                f"{len(self.class_names)} class names but {len(self.imagenet_indices)} index sets"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise InvalidArgument(f"label map class names repeat: {self.class_names}")
        seen: dict[int, str] = {}
        for name, idx in zip(self.class_names, self.imagenet_indices, strict=True):
            if not idx:
                raise InvalidArgument(f"class {name!r} maps to no ImageNet class")
            for i in idx:
                if not 0 <= int(i) < NUM_IMAGENET_CLASSES:
                    raise InvalidArgument(f"class {name!r}: ImageNet index {i} not in 0..999")
                if i in seen:
                    raise InvalidArgument(
                        f"ImageNet index {i} is mapped to both {seen[i]!r} and {name!r}"
                    )
                seen[int(i)] = name

    def subset(self, class_names: Sequence[str]) -> LabelMap:
        """The map restricted to (and reordered as) ``class_names``; InvalidArgument names the
        classes that have no mapping."""
        index = {n: i for i, n in enumerate(self.class_names)}
        missing = [n for n in class_names if n not in index]
        if missing:
            raise InvalidArgument(
                f"classes {missing} have no ImageNet mapping in label map {self.source!r}; "
                f"known classes: {list(self.class_names)}",
                field="class_names",
            )
        return LabelMap(
            class_names=tuple(class_names),
            imagenet_indices=tuple(self.imagenet_indices[index[n]] for n in class_names),
            target_dataset=self.target_dataset,
            source=self.source,
            measured=self.measured,
        )

    def to_json_dict(self) -> dict[str, Any]:
        """Canonical dict (what the teacher fingerprint hashes)."""
        return {
            "class_names": list(self.class_names),
            "imagenet_indices": [list(map(int, i)) for i in self.imagenet_indices],
        }


def load_label_map(name_or_path: str | Path = "fashion-mnist") -> LabelMap:
    """A built-in label map by dataset name (``fashion-mnist``) or a JSON file in the same format
    (``{"classes": [{"name": ..., "imagenet_indices": [...]}, ...]}``)."""
    key = str(name_or_path)
    path = BUILTIN_LABEL_MAPS.get(key.lower(), Path(key))
    if not path.is_file():
        raise NotFound(
            f"label map {key!r} is neither a built-in ({sorted(BUILTIN_LABEL_MAPS)}) nor a file"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        classes = sorted(raw["classes"], key=lambda c: c.get("index", 0))
        names = tuple(str(c["name"]) for c in classes)
        indices = tuple(tuple(int(i) for i in c["imagenet_indices"]) for c in classes)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"label map {path} is malformed: {exc}") from exc
    return LabelMap(
        class_names=names,
        imagenet_indices=indices,
        target_dataset=str(raw.get("target_dataset", "")),
        source=key,
        measured=dict(raw.get("measured", {})),
    )
