"""The fortunes text set: parsing, class selection, split, manifest check (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activekd.data import fortunes
from activekd.data.text import load_text_cache, load_text_dataset, text_dataset
from activekd.errors import FailedPrecondition, InvalidArgument, NotFound


def test_parse_removes_overstrike_and_empty_entries() -> None:
    raw = "First  one\n\tline two\n%\n\n%\n_\bb_\bo_\bl_\bd word\n%\n"
    assert fortunes.parse_fortune_file(raw) == ["First one line two", "bold word"]


def test_loader_classes_counts_and_determinism() -> None:
    manifest = fortunes.load_manifest()
    seen: set[str] = set()
    for split in ("train", "test"):
        texts, labels, names = load_text_dataset("fortunes", split)
        assert names == fortunes.FORTUNES_CLASSES and len(names) == 10
        assert labels.dtype == np.int64 and len(texts) == len(labels)
        counts = np.bincount(labels, minlength=10).tolist()
        assert counts == manifest["splits"][split]["class_counts"]
        assert all(t and t == fortunes.normalise(t) for t in texts)
        assert len(set(texts)) == len(texts)
        assert not seen & set(texts), "a text is in both splits"
        seen |= set(texts)
    total = np.array(manifest["splits"]["train"]["class_counts"]) + np.array(
        manifest["splits"]["test"]["class_counts"]
    )
    assert total.max() <= fortunes.MAX_PER_CLASS and total.min() >= 140  # balanced
    again = fortunes.build_splits(fortunes.data_dir())
    texts, labels = fortunes.load_fortunes("test")
    assert again["test"][0] == texts and np.array_equal(again["test"][1], labels)


def _write(folder: Path, entries: dict[str, list[str]]) -> None:
    for name in fortunes.FORTUNES_CLASSES:
        (folder / name).write_text("\n%\n".join(entries.get(name, [f"{name} only"])) + "\n%\n")


def test_ambiguous_texts_dropped_cap_and_split_by_hash(tmp_path: Path) -> None:
    many = [f"computer text number {i}" for i in range(400)]
    _write(tmp_path, {"computers": [*many, "shared"], "law": ["shared", "a lawyer", "a lawyer"]})
    splits = fortunes.build_splits(tmp_path)
    texts = splits["train"][0] + splits["test"][0]
    labels = np.concatenate([splits["train"][1], splits["test"][1]])
    assert "shared" not in texts  # filed under two topics
    assert texts.count("a lawyer") == 1
    assert int((labels == 0).sum()) == fortunes.MAX_PER_CLASS
    n_test = int((splits["test"][1] == 0).sum())
    assert 0.12 < n_test / fortunes.MAX_PER_CLASS < 0.28  # about 1 in 5
    # independent of the order of the entries in the file
    _write(tmp_path, {"computers": ["shared", *reversed(many)], "law": ["a lawyer", "shared"]})
    again = fortunes.build_splits(tmp_path)
    assert sorted(again["test"][0]) == sorted(splits["test"][0])


def test_manifest_mismatch_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, {})
    monkeypatch.setenv("ACTIVEKD_FORTUNES_DIR", str(tmp_path))
    with pytest.raises(FailedPrecondition, match="do not give the recorded"):
        fortunes.load_fortunes("train")
    texts, _ = fortunes.load_fortunes("train", verify=False)
    assert len(texts) + len(fortunes.load_fortunes("test", verify=False)[0]) == 10
    (tmp_path / "law").unlink()
    fortunes._splits.cache_clear()
    with pytest.raises(FailedPrecondition, match="apt-get install fortunes"):
        fortunes.load_fortunes("train", verify=False)
    with pytest.raises(InvalidArgument, match="unknown split"):
        fortunes.load_fortunes("validation")
    with pytest.raises(InvalidArgument, match="known: fortunes"):
        text_dataset("imdb")


def test_prompts_cover_every_class() -> None:
    assert tuple(fortunes.FORTUNES_PROMPTS) == fortunes.FORTUNES_CLASSES
    assert all(
        len(p) >= 1 and all(s.strip() for s in p) for p in fortunes.FORTUNES_PROMPTS.values()
    )


def test_missing_or_stale_cache(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"build_text_teacher\.py"):
        load_text_cache("fortunes", tmp_path / "none.npz")
    stale = tmp_path / "stale.npz"
    np.savez(stale, meta=np.asarray('{"prompts_sha256": "x"}'), class_names=np.asarray(["a"]))
    with pytest.raises(FailedPrecondition, match="other class descriptions"):
        load_text_cache("fortunes", stale)
