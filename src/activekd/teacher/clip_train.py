"""Small open_clip utilities: contrastive training on captioned images, checkpoint export.

Used to make a real (tiny) CLIP whose zero-shot head can be checked end to end without any
downloaded weights: images paired with captions built from class names and prompt templates,
trained with open_clip's own :class:`open_clip.loss.ClipLoss`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from activekd.data.templates import validate_class_names, validate_templates
from activekd.errors import InvalidArgument
from activekd.teacher.preprocess import Preprocess

LOCAL_DIR_WEIGHTS = "open_clip_pytorch_model.bin"


def model_preprocess(model: Any, *, invert: bool = False) -> Preprocess:
    """The teacher's tensor preprocessing for an open_clip model's ``preprocess_cfg``."""
    cfg = model.visual.preprocess_cfg
    size = cfg["size"]
    interp = str(cfg.get("interpolation", "bicubic"))
    mean, std = cfg["mean"], cfg["std"]
    return Preprocess(
        size=int(size if isinstance(size, int) else max(size)),
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bicubic",
        invert=invert,
    )


def train_clip_contrastive(
    model: Any,
    tokenizer: Any,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    templates: Sequence[str],
    *,
    steps: int = 400,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    max_logit_scale: float = 100.0,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` in place with ``ClipLoss`` on (image, caption) pairs.

    Each step samples ``batch_size`` images; each gets the caption
    ``random template.format(its class name)``. Text embeddings are computed once per distinct
    caption in the batch (gradients flow the same). Returns the loss per step.
    """
    from open_clip.loss import ClipLoss

    names = validate_class_names(class_names)
    temps = validate_templates(templates)
    imgs = np.asarray(images)
    y = np.asarray(labels, dtype=np.int64)
    if imgs.shape[0] != y.shape[0] or imgs.shape[0] == 0:
        raise InvalidArgument(f"{imgs.shape[0]} images for {y.shape[0]} labels")
    if y.min() < 0 or y.max() >= len(names):
        raise InvalidArgument(f"labels must be in 0..{len(names) - 1}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_all = model_preprocess(model)(imgs)
    y_all = torch.from_numpy(y)
    tokens = tokenizer([t.format(c) for c in names for t in temps])
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    cap = float(np.log(max_logit_scale))
    for step in range(steps):
        b = torch.randint(0, x_all.shape[0], (min(batch_size, x_all.shape[0]),), generator=gen)
        t = torch.randint(0, len(temps), (b.shape[0],), generator=gen)
        caption = y_all[b] * len(temps) + t
        uniq, inverse = torch.unique(caption, return_inverse=True)
        text = model.encode_text(tokens[uniq], normalize=True)[inverse]
        image = model.encode_image(x_all[b], normalize=True)
        loss = loss_fn(image, text, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, cap)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, losses[-1])
    model.eval()
    return losses


def save_checkpoint(model: Any, path: str | Path) -> Path:
    """Save ``model.state_dict()`` where ``open_clip`` can load it as ``pretrained=path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, p)
    return p


def export_local_dir(model: Any, model_cfg: dict[str, Any], folder: str | Path) -> Path:
    """Write ``open_clip_config.json`` (model + preprocess config) and the weights into
    ``folder`` so ``open_clip.create_model('local-dir:<folder>')`` loads the same model."""
    from open_clip.transform import PreprocessCfg

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    pp = dict(model.visual.preprocess_cfg) if hasattr(model.visual, "preprocess_cfg") else {}
    if not pp:
        pp = asdict(PreprocessCfg())
    config = {"model_cfg": model_cfg, "preprocess_cfg": pp}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2, default=list))
    save_checkpoint(model, out / LOCAL_DIR_WEIGHTS)
    return out


def used_token_ids(tokenizer: Any, prompts: Sequence[str]) -> np.ndarray:
    """Sorted distinct token ids the tokenizer produces for ``prompts`` (padding 0 included)."""
    return np.unique(np.asarray(tokenizer(list(prompts))))


def zero_unused_token_rows(model: Any, keep: np.ndarray) -> int:
    """Zero the rows of ``model.token_embedding`` not in ``keep``; returns how many were zeroed.

    Prompts made only of kept tokens give the same outputs; the zeros let a checkpoint of a
    small CLIP with a 49k vocabulary compress to a few hundred kB.
    """
    emb = model.token_embedding.weight
    mask = torch.ones(emb.shape[0], dtype=torch.bool)
    mask[torch.as_tensor(keep, dtype=torch.long)] = False
    with torch.no_grad():
        emb[mask] = 0.0
    return int(mask.sum())


def save_state_npz(model: Any, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """A compressed ``.npz`` of the float32 state dict (keys ``sd/<name>``) plus JSON ``meta``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"sd/{k}": v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    np.savez_compressed(p, meta=np.array(json.dumps(meta or {}, sort_keys=True)), **arrays)
    return p


def load_state_npz(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of :func:`save_state_npz`: ``(state_dict, meta)``."""
    with np.load(Path(path), allow_pickle=False) as z:
        state = {k[3:]: torch.from_numpy(z[k].copy()) for k in z.files if k.startswith("sd/")}
        meta = json.loads(str(z["meta"]))
    return state, meta
