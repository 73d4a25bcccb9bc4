"""The open_clip architectures shipped with activekd (``model_configs/*.json``, e.g. ``tiny-clip-32``).

They are added to open_clip's registry on demand, by :func:`register_model_configs`: the open_clip
backend calls it before loading a model, so importing :mod:`activekd.teacher` (or using the
label-map backend) never imports open_clip.
"""

from __future__ import annotations

from pathlib import Path

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
_registered = False


def register_model_configs() -> None:
    """Add ``model_configs/*.json`` to open_clip's architecture registry (idempotent).

    Call it before naming one of these architectures to open_clip directly
    (``open_clip.create_model_and_transforms("tiny-clip-32")``).
    """
    global _registered
    if _registered:
        return
    import open_clip
    from open_clip import factory

    if MODEL_CONFIG_DIR not in factory._MODEL_CONFIG_PATHS:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
    _registered = True
