"""Fortunes-10: a 10-class topical text set from the Debian package ``fortunes`` (BSD licence).

``apt-get install fortunes`` puts one text file per topic under ``/usr/share/games/fortunes``
(``ACTIVEKD_FORTUNES_DIR`` points elsewhere); entries are separated by lines holding ``%``. The
texts are not copied into this repository: they are read from the installed package, and
``fortunes_manifest.json`` (beside this module) records the class counts and a digest of each
split, so a machine whose package differs is told so instead of silently getting other rows.

How the set is made (deterministic, no random generator, independent of file order):

1. the ten topic files of :data:`FORTUNES_CLASSES` (topical, 147..703 entries each; the
   package's ``cookie-files`` document describes every file);
2. each entry: overstrike sequences (``X\\bX``, ``_\\bX``) removed, whitespace collapsed; empty
   entries dropped; duplicates within a file kept once; a text filed under two of the ten topics
   is dropped from both (its label is ambiguous);
3. per class, the :data:`MAX_PER_CLASS` texts with the smallest ``blake2b("cap:" + text)`` are
   kept (balance: 147..250 per class);
4. split: a text is in ``test`` when ``blake2b("split:" + text)`` is 0 mod 5 (about 20%), else in
   ``train``; rows are ordered by class, then by position in the topic file.

The zero-shot teacher's class descriptions (:data:`FORTUNES_PROMPTS`) were written from the class
names and the package's file descriptions BEFORE any accuracy was measured and must not be tuned
on accuracy (docs/datasets.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from activekd.errors import FailedPrecondition, InvalidArgument

DEFAULT_DIR = "/usr/share/games/fortunes"
#: The Debian package version the manifest was recorded from.
PACKAGE_VERSION = "1:1.99.1-7.3"
MANIFEST = Path(__file__).resolve().parent / "fortunes_manifest.json"
SPLITS: tuple[str, ...] = ("train", "test")
#: At most this many texts per class (the smallest hashes; see the module docstring).
MAX_PER_CLASS = 250
#: One text in this many goes to the test split (by hash).
TEST_MODULUS = 5

#: Class names = topic file names of the package, in label order.
FORTUNES_CLASSES: tuple[str, ...] = (
    "computers",
    "drugs",
    "education",
    "food",
    "law",
    "love",
    "politics",
    "science",
    "sports",
    "work",
)

#: Class descriptions for the zero-shot teacher, fixed before any accuracy was measured (from
#: the class name and the package's ``cookie-files`` description of each file). A class's
#: prototype is the normalised mean of its prompts' normalised embeddings. Do not tune.
FORTUNES_PROMPTS: dict[str, tuple[str, ...]] = {
    "computers": (
        "A quote or joke about computers.",
        "A quote or joke about computers, programming, software, programmers and system error "
        "messages.",
    ),
    "drugs": (
        "A quote or joke about drugs.",
        "A quote or joke about alcohol, drinking, getting drunk, cigarettes and smoking.",
    ),
    "education": (
        "A quote or joke about education.",
        "A quote or joke about schools, teachers, students, universities and scholarship.",
    ),
    "food": (
        "A quote or joke about food.",
        "A quote or joke about food, eating, cooking, recipes and diets.",
    ),
    "law": (
        "A quote or joke about the law.",
        "A quote or joke about lawyers, judges, courts, trials and stupid laws.",
    ),
    "love": (
        "A quote or joke about love.",
        "A quote or joke about love, romance, lovers, kissing and the heart.",
    ),
    "politics": (
        "A quote or joke about politics.",
        "A quote or joke about politics, politicians, government, elections, police and soldiers.",
    ),
    "science": (
        "A quote or joke about science.",
        "A quote or joke about science, mathematics, physics, engineering and technology.",
    ),
    "sports": (
        "A quote or joke about sports.",
        "A quote or joke about sports, athletes, teams, games, players and coaches.",
    ),
    "work": (
        "A quote or joke about work.",
        "A quote or joke about work, jobs, bosses, offices, business and the pains of working.",
    ),
}

_OVERSTRIKE = re.compile(r".\x08")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)


def data_dir() -> Path:
    """Folder holding the topic files (env ``ACTIVEKD_FORTUNES_DIR`` or the Debian path)."""
    return Path(os.environ.get("ACTIVEKD_FORTUNES_DIR", DEFAULT_DIR))


def normalise(text: str) -> str:
    """Overstrikes removed (repeatedly: ``*_\\b\\bX``), other control characters dropped,
    whitespace runs collapsed to one space, stripped."""
    while True:
        stripped = _OVERSTRIKE.sub("", text)
        if stripped == text:
            break
        text = stripped
    text = _CONTROL.sub("", text)  # a stray backspace too
    return " ".join(text.split())


def parse_fortune_file(raw: str) -> list[str]:
    """The normalised, non-empty entries of one strfile source (``%`` lines separate them)."""
    out = []
    for part in _SEPARATOR.split(raw):
        text = normalise(part)
        if text:
            out.append(text)
    return out


def _hash(salt: str, text: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{salt}:{text}".encode(), digest_size=8).digest())


def _read(folder: Path, name: str) -> list[str]:
    path = folder / name
    if not path.is_file():
        raise FailedPrecondition(
            f"fortune file {name!r} not found in {folder}: run `apt-get install fortunes` "
            "or set ACTIVEKD_FORTUNES_DIR"
        )
    return parse_fortune_file(path.read_bytes().decode("utf-8", errors="replace"))


def build_splits(folder: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """``{split: (texts, labels)}`` from the topic files in ``folder`` (module docstring)."""
    per_class: list[list[str]] = []
    owners: dict[str, set[int]] = {}
    for c, name in enumerate(FORTUNES_CLASSES):
        entries = list(dict.fromkeys(_read(folder, name)))  # in-file duplicates kept once
        per_class.append(entries)
        for text in entries:
            owners.setdefault(text, set()).add(c)
    out: dict[str, tuple[list[str], list[int]]] = {s: ([], []) for s in SPLITS}
    for c, entries in enumerate(per_class):
        unique = [t for t in entries if len(owners[t]) == 1]
        kept = set(sorted(unique, key=lambda t: _hash("cap", t))[:MAX_PER_CLASS])
        for text in unique:  # file order
            if text in kept:
                split = "test" if _hash("split", text) % TEST_MODULUS == 0 else "train"
                out[split][0].append(text)
                out[split][1].append(c)
    return {s: (texts, np.asarray(labels, np.int64)) for s, (texts, labels) in out.items()}


def split_digest(texts: list[str], labels: np.ndarray) -> str:
    """sha256 over the rows (label, text) in order: what the manifest records per split."""
    h = hashlib.sha256()
    for text, label in zip(texts, labels.tolist(), strict=True):
        h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()


def manifest_for(splits: dict[str, tuple[list[str], np.ndarray]]) -> dict[str, Any]:
    """The manifest of ``splits``: class names, per-split class counts and digests."""
    return {
        "dataset": "fortunes",
        "package": f"fortunes {PACKAGE_VERSION} (Debian)",
        "class_names": list(FORTUNES_CLASSES),
        "max_per_class": MAX_PER_CLASS,
        "test_modulus": TEST_MODULUS,
        "splits": {
            s: {
                "rows": len(texts),
                "class_counts": np.bincount(labels, minlength=len(FORTUNES_CLASSES)).tolist(),
                "sha256": split_digest(texts, labels),
            }
            for s, (texts, labels) in splits.items()
        },
    }


def load_manifest() -> dict[str, Any]:
    """The shipped manifest (``fortunes_manifest.json``)."""
    return dict(json.loads(MANIFEST.read_text()))


@lru_cache(maxsize=1)
def _splits(folder: str, verify: bool) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    splits = build_splits(Path(folder))
    if verify:
        want = load_manifest()["splits"]
        got = manifest_for(splits)["splits"]
        for s in SPLITS:
            if got[s]["sha256"] != want[s]["sha256"]:
                raise FailedPrecondition(
                    f"the fortune files in {folder} do not give the recorded fortunes {s} split "
                    f"({got[s]['rows']} rows {got[s]['class_counts']}, recorded "
                    f"{want[s]['rows']} {want[s]['class_counts']}): install Debian fortunes "
                    f"{PACKAGE_VERSION} or pass verify=False"
                )
    out = {}
    for s, (texts, labels) in splits.items():
        labels.setflags(write=False)
        out[s] = (tuple(texts), labels)
    return out


def load_fortunes(split: str = "train", verify: bool = True) -> tuple[list[str], np.ndarray]:
    """``(texts, labels int64 (N,))`` of ``split`` in {train, test}; cached per process.

    ``verify`` checks the split against the shipped manifest (FailedPrecondition on a mismatch,
    e.g. another version of the Debian package).
    """
    if split not in SPLITS:
        raise InvalidArgument(f"unknown split {split!r}; use 'train' or 'test'")
    texts, labels = _splits(str(data_dir()), verify)[split]
    return list(texts), labels


__all__ = [
    "DEFAULT_DIR",
    "FORTUNES_CLASSES",
    "FORTUNES_PROMPTS",
    "MAX_PER_CLASS",
    "PACKAGE_VERSION",
    "build_splits",
    "data_dir",
    "load_fortunes",
    "load_manifest",
    "manifest_for",
    "normalise",
    "parse_fortune_file",
    "split_digest",
]
