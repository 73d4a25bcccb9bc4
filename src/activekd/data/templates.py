"""Prompt templates for zero-shot CLIP teachers (each has exactly one ``{}`` for the class name).

``CLIP_ENSEMBLE_TEMPLATES`` is the 7-template ImageNet ensemble from the CLIP authors' prompt
engineering notebook; ``COOP_TEMPLATES`` are CoOp's hand-written per-dataset prompts
(Zhou et al., "Learning to Prompt for Vision-Language Models"), which the PCoreSet code uses.
"""

from __future__ import annotations

from collections.abc import Sequence

from activekd.errors import InvalidArgument, shown

SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)

CLIP_ENSEMBLE_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

FASHION_MNIST_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the {}, a type of clothing.",
    "a centered photo of a {}.",
)

COOP_TEMPLATES: dict[str, tuple[str, ...]] = {
    "imagenet": ("a photo of a {}.",),
    "caltech101": ("a photo of a {}.",),
    "oxford_pets": ("a photo of a {}, a type of pet.",),
    "stanford_cars": ("a photo of a {}.",),
    "oxford_flowers": ("a photo of a {}, a type of flower.",),
    "food101": ("a photo of {}, a type of food.",),
    "fgvc_aircraft": ("a photo of a {}, a type of aircraft.",),
    "sun397": ("a photo of a {}.",),
    "dtd": ("{} texture.",),
    "eurosat": ("a centered satellite photo of {}.",),
    "ucf101": ("a photo of a person doing {}.",),
    "fashion-mnist": FASHION_MNIST_TEMPLATES,
}


def templates_for(dataset: str) -> tuple[str, ...]:
    """Default templates for ``dataset`` (CoOp's when known, else ``SIMPLE_TEMPLATES``)."""
    key = dataset.lower()
    return COOP_TEMPLATES.get(key) or COOP_TEMPLATES.get(key.replace("_", "-"), SIMPLE_TEMPLATES)


def validate_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Check every template holds exactly one ``{}`` and formats; InvalidArgument otherwise."""
    out = tuple(templates)
    if not out:
        raise InvalidArgument("templates must not be empty", field="templates")
    for t in out:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise InvalidArgument(
                f"template {shown(t)} must contain exactly one '{{}}' for the class name",
                field="templates",
            )
        try:
            t.format("x")
        except (IndexError, KeyError, ValueError) as exc:
            raise InvalidArgument(
                f"template {shown(t)} does not format: {exc}; escape braces as '{{{{' '}}}}'",
                field="templates",
            ) from exc
    return out


def validate_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """Check the class names are non-empty, unique strings; InvalidArgument otherwise."""
    out = tuple(class_names)
    if not out:
        raise InvalidArgument("class_names must not be empty", field="class_names")
    for name in out:
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgument(
                f"class name {shown(name)} must be a non-empty string", field="class_names"
            )
    if len(set(out)) != len(out):
        dupes = sorted({n for n in out if out.count(n) > 1})
        raise InvalidArgument(f"class names repeat: {dupes}", field="class_names")
    return out
