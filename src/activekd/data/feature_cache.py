"""Where per-machine feature caches live, and how they are read.

Teacher features (the label-map teacher's 1280-d pooled EfficientNet-Lite0 features of the 70k
Fashion-MNIST images, MiniLM sentence embeddings of a text set) are too large for git
(~180 MB in float16 for Fashion-MNIST). They are built once per machine by a resumable script
into ``feature_cache_dir()``: ``$ACTIVEKD_CACHE_DIR`` when set, else
``$XDG_CACHE_HOME/activekd`` (default ``~/.cache/activekd``).

A feature file is an ``.npz`` with ``<split>_features`` (float16, rows in dataset order),
optionally ``<split>_probs``, the producing teacher's ``identity`` JSON and a ``meta`` JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from activekd.errors import NotFound


def feature_cache_dir() -> Path:
    """The folder of this machine's feature caches (not created here)."""
    env = os.environ.get("ACTIVEKD_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "activekd"


def feature_file(name: str) -> Path:
    """``feature_cache_dir() / f"{name}.npz"``."""
    return feature_cache_dir() / f"{name}.npz"


def load_feature_file(path: str | Path, hint: str = "") -> dict[str, Any]:
    """``{"features": {split: float32 (N, D)}, "probs": {split: ...}, "identity": dict,
    "meta": dict}``; NotFound saying how to build the file when it is missing."""
    p = Path(path)
    if not p.is_file():
        how = f": build it with {hint}" if hint else ""
        raise NotFound(f"feature cache {p.name} is not in {p.parent}{how}")
    out: dict[str, Any] = {"features": {}, "probs": {}, "identity": {}, "meta": {}}
    with np.load(p, allow_pickle=False) as z:
        for key in z.files:
            if key.endswith("_features"):
                out["features"][key[: -len("_features")]] = z[key].astype(np.float32)
            elif key.endswith("_probs"):
                out["probs"][key[: -len("_probs")]] = z[key].astype(np.float32)
        if "identity" in z.files:
            out["identity"] = json.loads(str(z["identity"]))
        if "meta" in z.files:
            out["meta"] = json.loads(str(z["meta"]))
    return out


__all__ = ["feature_cache_dir", "feature_file", "load_feature_file"]
