"""`activekd select` on local .npy arrays, and argument errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from activekd.cli import main
from activekd.selection import select_batch


def test_select_on_local_arrays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(5), size=200).astype(np.float32)
    np.save(tmp_path / "p.npy", probs)
    out = tmp_path / "picks.json"
    assert (
        main(
            [
                "select",
                "--probs",
                str(tmp_path / "p.npy"),
                "--budget",
                "7",
                "--labeled",
                "1,5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    got = json.loads(out.read_text())
    want = select_batch("pcoreset", 7, probs=probs, labeled=np.array([1, 5]))
    assert got["indices"] == want.indices.tolist()
    assert json.loads(capsys.readouterr().out)["strategy"] == "pcoreset"


def test_unknown_arguments_are_an_error() -> None:
    with pytest.raises(SystemExit):
        main(["select", "--budget", "3", "--bogus"])
