"""What the strategy sees (selection_probs / selection_features), teacher adaptation in the loop,
and the harness's config strings (RunSpec)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from activekd.errors import InvalidArgument
from activekd.experiment import label_efficiency as le
from activekd.experiment.loop import LoopConfig, RoundResult, run_active_learning
from activekd.experiment.oracle import initial_labels
from activekd.selection import select_batch

SMALL = {"backbone": "mlp", "batch_size_labeled": 16, "batch_size_unlabeled": 32, "threads": 1}


@pytest.fixture(scope="module")
def vec() -> dict[str, np.ndarray]:
    """Vectors with class structure: 4 classes, 240 pool rows, 80 test rows, 16-d."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (4, 16))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 4
        return (means[y] + rng.normal(0, 1, (n, 16))).astype(np.float32), y

    x, y = draw(240)
    xt, yt = draw(80)

    def teacher(lab: np.ndarray) -> np.ndarray:
        p = np.full((lab.size, 4), 0.1)
        p[np.arange(lab.size), (lab + (rng.random(lab.size) < 0.4)) % 4] += 0.6
        return p / p.sum(1, keepdims=True)

    return {"x": x, "y": y, "t": teacher(y), "xt": xt, "yt": yt, "tt": teacher(yt)}


def _run(vec: dict[str, np.ndarray], **kw: Any) -> list[RoundResult]:
    cfg = LoopConfig(rounds=1, budget=4, seed=2, student=SMALL | {"steps": 6}, **kw)
    return run_active_learning(
        cfg, vec["x"], vec["y"], vec["t"], vec["xt"], vec["yt"], vec["tt"],
        teacher_features_pool=vec["x"], teacher_features_test=vec["xt"],
    )  # fmt: skip


def test_pcoreset_on_teacher_probs_picks_what_select_batch_picks_on_them(
    vec: dict[str, np.ndarray],
) -> None:
    res = _run(vec, strategy="pcoreset", selection_probs="teacher")
    first = np.asarray(sorted(res[0].selected))
    # the round-0 labeled rows: 1 per class, the same for every strategy (paired by seed)
    ids, _ = initial_labels([str(i) for i in range(240)], vec["y"], 1, 2, 4)
    labeled = np.asarray(sorted(int(i) for i in ids))
    want = select_batch("pcoreset", 4, probs=vec["t"], labeled=labeled, seed=0)
    assert sorted(want.indices.tolist()) == first.tolist()
    combined = _run(vec, strategy="pcoreset")
    assert sorted(combined[0].selected) != first.tolist()  # the student's probs differ


def test_ce_probs_are_the_softmax_of_the_ce_head(vec: dict[str, np.ndarray]) -> None:
    from activekd.experiment.loop import _selection_probs
    from activekd.student.scoring import PoolScores

    scores = PoolScores(
        probs=np.full((2, 3), 1 / 3, np.float32),
        ce_logits=np.array([[0.0, 0.0, np.log(2.0)], [5.0, 5.0, 5.0]], np.float32),
        kd_logits=None,
        features=np.zeros((2, 1), np.float32),
    )
    p = _selection_probs("ce", scores, np.zeros((2, 3)))
    assert p.dtype == np.float32
    assert np.allclose(p, [[0.25, 0.25, 0.5], [1 / 3, 1 / 3, 1 / 3]], atol=1e-6)
    assert _selection_probs("combined", scores, np.zeros((2, 3))) is scores.probs
    # what the trainer's scored pool stores for pcoreset_ce through the services
    np.testing.assert_array_equal(scores.arrays()["ce_probs"], p)


@pytest.mark.parametrize(
    ("name", "source"), [("pcoreset_teacher", "teacher"), ("pcoreset_ce", "ce")]
)
def test_a_named_pcoreset_variant_is_pcoreset_on_its_probabilities(
    vec: dict[str, np.ndarray], name: str, source: str
) -> None:
    """selection_probs 'auto' (the default) resolves to the registry's probs_source: the named
    variant picks exactly what pcoreset picks on those probabilities, round by round."""
    assert LoopConfig(strategy=name).probs_source() == source
    assert LoopConfig(strategy="pcoreset").probs_source() == "combined"
    assert LoopConfig(strategy=name, selection_probs="combined").probs_source() == "combined"
    named = _run(vec, strategy=name)
    explicit = _run(vec, strategy="pcoreset", selection_probs=source)
    assert [r.selected for r in named] == [r.selected for r in explicit]
    assert [r.accuracy for r in named] == [r.accuracy for r in explicit]
    spec = le.RunSpec.parse(name)
    assert (spec.strategy, spec.selection_probs) == (name, source)
    assert le.RunSpec.parse("typiclust").selection_probs == "combined"


def test_teacher_features_are_what_feature_strategies_see(vec: dict[str, np.ndarray]) -> None:
    """coreset on the teacher's features (here: the inputs themselves) is a function of the
    features and labeled set only, so two different students give the same picks."""
    a = _run(vec, strategy="coreset", selection_features="teacher")
    b = run_active_learning(
        LoopConfig(strategy="coreset", rounds=1, budget=4, seed=2,
                   student=SMALL | {"steps": 1}, selection_features="teacher"),
        vec["x"], vec["y"], vec["t"], vec["xt"], vec["yt"], vec["tt"],
        teacher_features_pool=vec["x"],
    )  # fmt: skip
    assert a[0].selected == b[0].selected


def test_each_round_keeps_the_strategys_stats(vec: dict[str, np.ndarray]) -> None:
    """probcover's ``truncated_balls`` (the fraction of balls cut at the neighbour cap, where its
    greedy stops being exact) must be in the results to be reported."""
    res = _run(vec, strategy="probcover")
    ids, _ = initial_labels([str(i) for i in range(240)], vec["y"], 1, 2, 4)
    labeled = np.asarray(sorted(int(i) for i in ids))
    want = select_batch(
        "probcover", 4, features=vec["x"], probs=vec["t"], labeled=labeled, seed=0
    ).stats
    assert set(res[0].selection_stats) == {k for k in want if not k.endswith("seconds")}
    assert "truncated_balls" in res[0].selection_stats
    assert res[-1].selection_stats == {}  # the last round picks nothing
    assert res[0].to_dict()["selection_stats"] == res[0].selection_stats


class _CountingAdapter:
    """Records what the loop hands the adapter; predicts the true class (a perfect teacher)."""

    def __init__(self, y: dict[bytes, int]) -> None:
        self.fits: list[int] = []
        self.y = y

    def fit(self, features: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> None:
        assert len(rows) == len(labels) and len(np.unique(rows)) == len(rows)
        self.fits.append(len(rows))

    def predict(self, features: np.ndarray) -> np.ndarray:
        out = np.full((len(features), 4), 0.01, np.float32)
        out[np.arange(len(features)), self.key(features)] = 0.97
        return out

    def key(self, features: np.ndarray) -> np.ndarray:
        return np.asarray([self.y[f.tobytes()] for f in features])


def test_adaptation_refits_the_teacher_every_round_on_the_labels_so_far(
    vec: dict[str, np.ndarray],
) -> None:
    lut = {f.tobytes(): int(c) for f, c in zip(vec["x"], vec["y"], strict=True)}
    lut |= {f.tobytes(): int(c) for f, c in zip(vec["xt"], vec["yt"], strict=True)}
    ad = _CountingAdapter(lut)
    res = run_active_learning(
        LoopConfig(strategy="random", rounds=2, budget=4, seed=2, student=SMALL | {"steps": 4},
                   teacher_adaptation="clap"),
        vec["x"], vec["y"], vec["t"], vec["xt"], vec["yt"], vec["tt"],
        teacher_features_pool=vec["x"], teacher_features_test=vec["xt"], adapter=ad,
    )  # fmt: skip
    assert ad.fits == [4, 8, 12]
    assert [r.teacher_accuracy for r in res] == [1.0, 1.0, 1.0]  # the adapted teacher's
    zero = _run(vec, strategy="random")
    assert zero[0].teacher_accuracy == pytest.approx(
        float((vec["tt"].argmax(1) == vec["yt"]).mean())
    )


def test_settings_are_checked(vec: dict[str, np.ndarray]) -> None:
    with pytest.raises(InvalidArgument, match="selection_probs"):
        _run(vec, strategy="random", selection_probs="student")
    with pytest.raises(InvalidArgument, match="teacher_features_pool"):
        run_active_learning(
            LoopConfig(strategy="coreset", rounds=1, budget=4, selection_features="teacher",
                       student=SMALL | {"steps": 1}),
            vec["x"], vec["y"], vec["t"], vec["xt"], vec["yt"],
        )  # fmt: skip


def test_run_spec_strings() -> None:
    s = le.RunSpec.parse("pcoreset:probs=ce")
    assert (s.strategy, s.kd, s.selection_probs, s.selection_features) == (
        "pcoreset", True, "ce", "student")  # fmt: skip
    t = le.RunSpec.parse("typiclust")
    assert t.selection_features == "teacher"  # coverage strategies default to the teacher's
    u = le.RunSpec.parse("ce_only-random:adapt=clap,k=3")
    assert (u.kd, u.teacher_adaptation, u.params) == (False, "clap", (("k", 3.0),))
    with pytest.raises(InvalidArgument, match="key=value"):
        le.RunSpec.parse("random:oops")
    with pytest.raises(InvalidArgument, match="number"):
        le.RunSpec.parse("random:k=x")
    grid = le.GridConfig(strategies=["random"], ce_only_strategies=[],
                         extra_configs=["pcoreset:probs=ce", "random"])  # fmt: skip
    assert [c.name for c in grid.configs()] == ["random", "pcoreset:probs=ce"]
    assert le._folder("pcoreset:probs=ce,k=2") == "pcoreset@probs=ce+k=2"
    assert "fashion-mnist" not in grid.tag  # earlier results keep their folder
    assert le.GridConfig(dataset="fortunes", student_input="text").tag.startswith("fortunes-text-")


def test_zero_shot_twin_drops_only_the_adaptation() -> None:
    assert le.zero_shot_twin("typiclust:adapt=clap") == "typiclust"
    assert le.zero_shot_twin("pcoreset:probs=ce,adapt=clap,k=2") == "pcoreset:probs=ce,k=2"
    assert le.zero_shot_twin("typiclust") is None
    assert le.zero_shot_twin("random:adapt=none") is None
    assert le.zero_shot_twin("pcoreset:probs=ce") is None


def test_summary_pairs_each_adapted_config_with_its_zero_shot_twin(tmp_path: Any) -> None:
    """The adaptation table: differences per seed, over rounds and at the last round, with the
    95 % t-interval (t(0.975, 2) = 4.303) and the count of seeds where adaptation won."""
    import json

    def write(config: str, seed: int, accs: list[float]) -> None:
        folder = tmp_path / le._folder(config)
        folder.mkdir(exist_ok=True)
        rounds = [
            {"round": i, "labeled": 10 * (i + 1), "accuracy": a, "accuracy_ce": a,
             "accuracy_kd": a, "selected": []}
            for i, a in enumerate(accs)
        ]  # fmt: skip
        (folder / f"seed-{seed}.json").write_text(
            json.dumps({"config": config, "seed": seed, "rounds": rounds})
        )

    for seed, (zs, gain) in enumerate([(0.50, 0.02), (0.55, 0.04), (0.60, -0.03)]):
        write("random", seed, [zs - 0.05, zs - 0.05])
        write("typiclust", seed, [zs, zs])
        write("typiclust:adapt=clap", seed, [zs + gain, zs + gain])
    md = le.summarise(tmp_path)
    row = next(line for line in md.splitlines() if line.startswith("| typiclust:adapt=clap −"))
    # gains 2, 4, -3 points: mean 1.00, sd sqrt(13) = 3.606, half-width 4.303 * 3.606 / sqrt(3) = 8.96
    assert row == "| typiclust:adapt=clap − typiclust | 3 | +1.00 ± 8.96 | +1.00 ± 8.96 | 2/3 |"
    assert "| configs | seeds | mean over rounds | at 20 labels | seeds better at 20 |" in md


def test_summary_counts_runs_by_device_and_names_seeds_paired_across_devices(
    tmp_path: Any,
) -> None:
    """A grid resumed on another machine (a GPU lease) records each run's device: the summary
    says how many ran where and which seeds' configs ran on different devices."""
    import json

    def write(config: str, seed: int, device: str | None) -> None:
        folder = tmp_path / le._folder(config)
        folder.mkdir(exist_ok=True)
        rounds = [{"round": 0, "labeled": 10, "accuracy": 0.5, "accuracy_ce": 0.5,
                   "accuracy_kd": 0.5, "selected": []}]  # fmt: skip
        run = {"config": config, "seed": seed, "rounds": rounds}
        if device is not None:
            run["device"] = device
        (folder / f"seed-{seed}.json").write_text(json.dumps(run))

    write("random", 1, "cpu")
    write("typiclust", 1, "cpu")
    assert le.devices_note(tmp_path) == "\nRuns by device: cpu (2).\n"
    write("random", 2, "cpu")
    write("typiclust", 2, "NVIDIA H100")
    write("random", 3, None)  # files written before devices were recorded
    md = le.summarise(tmp_path)
    assert md.endswith(
        "\nRuns by device: NVIDIA H100 (1), cpu (3), unknown (1). Seeds whose configs ran on more "
        "than one device (paired across devices): 2.\n"
    )
