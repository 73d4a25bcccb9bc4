"""The trainer's library part (``activekd.student.round_job``) on tiny synthetic pools.

Real Redis (experiment state, pool metadata) and a real pool store on disk; the student is a
4-/8-channel CNN trained for a handful of steps on 28x28 synthetic images, one thread.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch

from activekd.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from activekd.ids import teacher_targets_pool_id
from activekd.seeds import round_seed
from activekd.state.experiment_spec import ExperimentSpec
from activekd.state.experiments import ExperimentStore, RoundState
from activekd.store import PoolStore
from activekd.student import NonFiniteLossError, evaluate, load_checkpoint, load_student, score_pool
from activekd.student.round_job import (
    RoundRequest,
    RoundTrainer,
    resolve_student_config,
    student_pool_id,
)
from activekd.teacher.adapt import TeacherAdapter

CLASSES = ["north-west", "north-east", "south-west", "south-east"]
C = len(CLASSES)
TINY: dict[str, Any] = {
    "steps": 6,
    "log_every": 2,
    "batch_size_labeled": 8,
    "batch_size_unlabeled": 16,
    "backbone_args": {"widths": [4, 8], "hidden": 16},
    "threads": 1,
}


def synth_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 noise with a bright 10x10 patch in the class's quadrant."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_per_class)
    rng.shuffle(y)
    x = rng.integers(0, 80, size=(y.size, 28, 28)).astype(np.uint8)
    for i, c in enumerate(y):
        r0, c0 = 2 + 14 * (c // 2), 2 + 14 * (c % 2)
        x[i, r0 : r0 + 10, c0 : c0 + 10] = rng.integers(180, 256, size=(10, 10))
    return x, y.astype(np.int64)


def noisy_teacher(y: np.ndarray, seed: int, right: float = 0.8) -> np.ndarray:
    """Soft probabilities, argmax right for ~``right`` of the rows."""
    rng = np.random.default_rng(seed)
    guess = np.where(rng.random(y.size) < right, y, (y + 1) % C)
    p = rng.dirichlet(np.ones(C), size=y.size) * 0.3
    p[np.arange(y.size), guess] += 0.7
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


@dataclass
class World:
    client: redis.Redis
    store: PoolStore
    experiments: ExperimentStore
    trainer: RoundTrainer
    ckpt_root: Path
    ids: list[str]
    y: np.ndarray
    x: np.ndarray
    t: np.ndarray
    xt: np.ndarray
    yt: np.ndarray
    tt: np.ndarray

    def initial(self, per_class: int = 2) -> tuple[list[str], list[int]]:
        ids, labels = [], []
        for c in range(C):
            rows = np.flatnonzero(self.y == c)[:per_class]
            ids += [self.ids[r] for r in rows]
            labels += [c] * len(rows)
        return ids, labels

    def experiment(
        self,
        exp_id: str,
        *,
        student: dict[str, Any] | None = None,
        teacher_pool: str = "syn/teacher",
        ids: list[str] | None = None,
        labels: list[int] | None = None,
        seed: int = 3,
        budget: int = 4,
        rounds: int = 2,
        teacher_config: dict[str, Any] | None = None,
        strategy: str = "pcoreset",
    ) -> str:
        init_ids, init_labels = self.initial()
        spec = ExperimentSpec(
            pool_id="syn/pool",
            test_pool_id="syn/test",
            dataset="synthetic",
            class_names=list(CLASSES),
            teacher_config=(
                teacher_config
                if teacher_config is not None
                else ({"pool_id": teacher_pool} if teacher_pool else {})
            ),
            student_config=dict(TINY if student is None else student),
            strategy=strategy,
            initial_item_ids=ids if ids is not None else init_ids,
            initial_labels=labels if labels is not None else init_labels,
            budget_per_round=budget,
            num_rounds=rounds,
            seed=seed,
        )
        self.experiments.create(spec, exp_id)
        return exp_id


@pytest.fixture
def world(redis_client: redis.Redis, tmp_path: Path) -> World:
    store = PoolStore(tmp_path / "store", redis_client)
    x, y = synth_images(30, seed=0)  # 120-item pool
    xt, yt = synth_images(10, seed=1)  # 40-item test pool
    ids = [f"syn-{i:03d}" for i in range(y.size)]
    t, tt = noisy_teacher(y, 0), noisy_teacher(yt, 1)
    store.put("syn/pool", ids, {"images": x, "labels": y})
    store.put("syn/teacher", ids, {"probs": t})
    test_ids = [f"test-{i:03d}" for i in range(yt.size)]
    store.put("syn/test", test_ids, {"images": xt, "labels": yt})
    store.put("syn/teacher-test", test_ids, {"probs": tt})
    experiments = ExperimentStore(redis_client)
    root = tmp_path / "checkpoints"
    trainer = RoundTrainer(store, experiments, root, device="cpu", threads=1)
    return World(redis_client, store, experiments, trainer, root, ids, y, x, t, xt, yt, tt)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(world: World, exp_id: str) -> list[str]:
    folder = world.ckpt_root / exp_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------------------- rounds
def test_round_trains_checkpoints_scores_and_evaluates(world: World) -> None:
    exp = world.experiment("e-full")
    events: list[Any] = []
    out = world.trainer.train(
        RoundRequest(exp, 0, teacher_test_pool_id="syn/teacher-test", predict_pool=True),
        progress=events.append,
    )
    assert [(e.step, e.total_steps) for e in events] == [(2, 6), (4, 6), (6, 6)]
    assert all(np.isfinite([e.loss, e.ce, e.kd]).all() for e in events)
    assert out.steps == 6 and out.num_labeled == 2 * C and out.losses["total"] == events[-1].loss

    path = world.ckpt_root / exp / "round-0.ckpt"
    assert _files(world, exp) == ["round-0.ckpt"]  # no temp file next to it
    assert out.checkpoint.path == path and out.checkpoint.sha256 == _sha(path)
    assert out.checkpoint.size_bytes == path.stat().st_size
    assert out.checkpoint.checkpoint_id == f"{exp}/round-0"
    ckpt = load_checkpoint(path)
    assert ckpt.metadata["num_labeled"] == 8 and ckpt.metadata["pool_id"] == "syn/pool"
    assert ckpt.metadata["input_array"] == "images"
    assert (ckpt.config.steps, ckpt.config.log_every, ckpt.config.num_classes) == (6, 2, C)
    assert ckpt.config.seed == 3 * 1000 + 0  # spec.seed * 1000 + round, as the in-process loop

    # student pool = the reloaded checkpoint's scores, in the pool's item order
    assert out.student_pool is not None and out.student_pool.pool_id == student_pool_id(exp, 0)
    assert set(out.student_pool.arrays) == {
        "probs",
        "ce_probs",
        "ce_logits",
        "kd_logits",
        "features",
    }
    probs = world.store.open_array(student_pool_id(exp, 0), "probs")
    model, _ = load_student(path)
    again = score_pool(model, world.x)
    np.testing.assert_allclose(probs, again.probs, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert world.store.item_ids(student_pool_id(exp, 0)).tolist() == world.ids

    # evaluation = the library's evaluate on the test pool, teacher fields from its matrix
    ev = out.evaluation
    assert ev is not None and ev.num_examples == 40 and ev.test_pool_id == "syn/test"
    ref = evaluate(model, world.xt, world.yt, world.tt)
    assert ev.accuracy == pytest.approx(ref["accuracy"])
    assert ev.kd_accuracy == pytest.approx(ref["accuracy_kd"])
    assert ev.teacher_accuracy == pytest.approx(float((world.tt.argmax(1) == world.yt).mean()))
    assert ev.teacher_agreement == pytest.approx(ref["teacher_agreement"])

    # the same through the checkpoint-only entry points
    ev2 = world.trainer.evaluate(exp, 0, teacher_test_pool_id="syn/teacher-test")
    assert (ev2.accuracy, ev2.teacher_agreement) == (ev.accuracy, ev.teacher_agreement)
    meta, seconds = world.trainer.predict_pool(exp, 0, output_pool_id="out/scored")
    assert meta.num_items == 120 and seconds > 0
    np.testing.assert_allclose(world.store.open_array("out/scored", "probs"), probs, atol=1e-6)
    infos = world.trainer.list_checkpoints(exp)
    assert [(i.round, i.sha256) for i in infos] == [(0, out.checkpoint.sha256)]
    with world.trainer.open_checkpoint(exp, 0) as (fh, info):
        assert hashlib.sha256(fh.read()).hexdigest() == info.sha256 == out.checkpoint.sha256


def test_config_precedence_and_struct_numbers(world: World) -> None:
    exp_id = world.experiment("e-cfg", student={**TINY, "lr": 0.01, "steps": 5}, seed=7)
    exp = world.experiments.get(exp_id)
    # Struct numbers arrive as floats: integral ones become ints where the config needs them
    over = {"lr": 0.002, "steps": 4.0, "backbone_args": {"widths": [4.0, 8.0], "hidden": 16.0}}
    cfg, array = resolve_student_config(exp, 1, over)
    assert (cfg.lr, cfg.steps, cfg.batch_size_labeled) == (0.002, 4, 8)  # override > spec > default
    assert isinstance(cfg.steps, int) and cfg.backbone_args["widths"] == [4, 8]
    assert (cfg.seed, cfg.num_classes, cfg.temperature, array) == (7001, C, 2.0, "images")
    with pytest.raises(InvalidArgument, match=r"unknown keys \['epochs', 'lrr'\]") as e:
        resolve_student_config(exp, 0, {"lrr": 1.0, "epochs": 3})
    assert e.value.field == "epochs"
    with pytest.raises(InvalidArgument, match="num_classes = 3 contradicts"):
        resolve_student_config(exp, 0, {"num_classes": 3})
    with pytest.raises(InvalidArgument, match="lr"):
        world.trainer.prepare(RoundRequest(exp_id, 0, overrides={"lr": -1.0}))
    bad_spec = world.experiment("e-badspec", student={"epochs": 2})
    with pytest.raises(FailedPrecondition, match=r"'e-badspec' student_config has unknown keys"):
        world.trainer.prepare(RoundRequest(bad_spec, 0))


def test_round_seed_rule_and_the_exact_integer_seed_field(world: World) -> None:
    exp = world.experiments.get(world.experiment("e-seed", student={**TINY, "seed": 4}, seed=7))
    assert resolve_student_config(exp, 2, {})[0].seed == 4  # the spec's student_config wins
    plain = world.experiments.get(world.experiment("e-seed-default", seed=2**62))
    assert resolve_student_config(plain, 3, {})[0].seed == round_seed(2**62, 3)
    assert round_seed(2**62, 3) == (2**62 * 1000 + 3) % 2**63
    # the request's seed field: exact above 2**53 (no double on the way), beats the spec's seed
    big = 2**53 + 1
    assert resolve_student_config(exp, 2, {}, seed=big)[0].seed == big
    assert resolve_student_config(exp, 2, {"seed": 12.0}, seed=12)[0].seed == 12  # agree: fine
    with pytest.raises(InvalidArgument, match="contradicts"):  # the double rounded 2**53 + 1
        resolve_student_config(exp, 2, {"seed": float(big)}, seed=big)
    with pytest.raises(InvalidArgument, match="contradicts student_config seed") as e:
        resolve_student_config(exp, 2, {"seed": 3}, seed=5)
    assert e.value.field == "seed"
    with pytest.raises(InvalidArgument, match=r"\[0, 2\*\*63\)"):
        resolve_student_config(exp, 2, {}, seed=2**63)
    prepared = world.trainer.prepare(RoundRequest(exp.experiment_id, 0, seed=big))
    assert prepared.config.seed == big


def test_labels_of_a_round_exclude_later_selections(world: World) -> None:
    exp = world.experiment("e-rounds")
    es = world.experiments
    for src, dst in [("CREATED", "TEACHER_SCORED"), ("TEACHER_SCORED", "STUDENT_TRAINED"),
                     ("STUDENT_TRAINED", "POOL_SCORED")]:  # fmt: skip
        es.advance(exp, src, dst)
    picked = [i for i in world.ids if i not in es.labels(exp)][:4]
    es.advance(exp, "POOL_SCORED", "SELECTED", updates={"selected_item_ids": picked})
    es.advance(exp, "SELECTED", "AWAITING_LABELS")
    es.submit_labels(exp, {i: int(world.y[world.ids.index(i)]) for i in picked})
    es.advance(exp, RoundState.LABELS_COMPLETE, RoundState.CREATED)
    r0 = world.trainer.prepare(RoundRequest(exp, 0))
    r1 = world.trainer.prepare(RoundRequest(exp, 1))
    assert r0.num_labeled == 8 and not set(picked) & set(r0.labeled_ids)
    assert r1.num_labeled == 12 and set(picked) <= set(r1.labeled_ids)
    # rows sorted, labels the ground truth of those rows
    assert np.all(np.diff(r1.labeled_rows) > 0)
    np.testing.assert_array_equal(r1.labels, world.y[r1.labeled_rows])
    with pytest.raises(FailedPrecondition, match="is in round 1; round 2 has not begun"):
        world.trainer.prepare(RoundRequest(exp, 2))


def test_teacher_pool_in_another_order_is_mapped_by_item_id(world: World) -> None:
    rev = list(reversed(world.ids))
    world.store.put("syn/teacher-rev", rev, {"probs": world.t[::-1].copy()})
    a = world.experiment("e-aligned")
    b = world.experiment("e-mapped", teacher_pool="syn/teacher-rev")
    pa, pb = (world.trainer.prepare(RoundRequest(e, 0)) for e in (a, b))
    assert pa.teacher_probs is not None and pb.teacher_probs is not None
    np.testing.assert_array_equal(pa.teacher_probs, pb.teacher_probs)
    sa = load_checkpoint(world.trainer.run(pa).checkpoint.path).state_dict
    sb = load_checkpoint(world.trainer.run(pb).checkpoint.path).state_dict
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same inputs -> same weights
    world.store.put("syn/teacher-half", world.ids[:60], {"probs": world.t[:60]})
    with pytest.raises(FailedPrecondition, match=r"does not cover pool 'syn/pool'.*60 item id"):
        world.trainer.prepare(RoundRequest(a, 0, teacher_pool_id="syn/teacher-half"))


def test_clap_adaptation_distils_from_the_teacher_refitted_on_the_labels(world: World) -> None:
    """teacher_config.adaptation='clap': the KD targets are the library's adapted teacher on the
    teacher pool's features (mapped by item id), better than the zero-shot probabilities."""
    rng = np.random.default_rng(7)
    feats = (np.eye(C)[world.y] * 2 + rng.normal(0, 0.5, (world.y.size, C))).astype(np.float32)
    weak = noisy_teacher(world.y, 5, right=0.5)
    order = rng.permutation(world.y.size)  # stored in another order: mapped by item id
    world.store.put(
        "syn/teacher-f",
        [world.ids[i] for i in order],
        {"probs": weak[order], "features": feats[order].astype(np.float16)},
    )
    exp = world.experiment(
        "e-clap", teacher_config={"pool_id": "syn/teacher-f", "adaptation": "clap"}
    )
    prep = world.trainer.prepare(RoundRequest(exp, 0))
    assert prep.teacher_probs is not None and prep.teacher_probs.dtype == np.float32
    ref = TeacherAdapter.from_zero_shot(feats.astype(np.float16).astype(np.float32), weak)
    ref.fit(feats.astype(np.float16).astype(np.float32), prep.labeled_rows, prep.labels)
    np.testing.assert_allclose(prep.teacher_probs, ref.predict(feats), atol=1e-3)
    np.testing.assert_allclose(prep.teacher_probs.sum(1), 1.0, atol=1e-5)
    adapted = float((prep.teacher_probs.argmax(1) == world.y).mean())
    zero_shot = float((weak.argmax(1) == world.y).mean())
    assert adapted > zero_shot + 0.2, (adapted, zero_shot)
    plain = world.trainer.prepare(
        RoundRequest(world.experiment("e-plain", teacher_pool="syn/teacher-f"), 0)
    )
    np.testing.assert_array_equal(plain.teacher_probs, weak)  # adaptation off: the pool's probs

    no_feats = world.experiment("e-clap-nofeat", teacher_config={"adaptation": "clap"})
    with pytest.raises(FailedPrecondition, match=r"no 'features' array.*use force"):
        world.trainer.prepare(RoundRequest(no_feats, 0, teacher_pool_id="syn/teacher"))
    with pytest.raises(InvalidArgument, match=r"adaptation 'lora': use one of none, clap"):
        world.experiment("e-bad", teacher_config={"pool_id": "syn/teacher", "adaptation": "lora"})


def test_write_teacher_targets_stores_the_rounds_distillation_targets(world: World) -> None:
    """write_teacher_targets (what the driver asks for pcoreset_teacher): the round's targets,
    adapted here, as <experiment>/round-<r>/teacher in the pool's rows and item ids although the
    teacher pool holds its items in another order; not written unless asked, and asking without
    a teacher is FailedPrecondition before any training."""
    rng = np.random.default_rng(5)
    feats = (np.eye(C)[world.y] * 2 + rng.normal(0, 0.5, (world.y.size, C))).astype(np.float32)
    order = rng.permutation(world.y.size)
    world.store.put("syn/teacher-g", [world.ids[i] for i in order],
                    {"probs": world.t[order], "features": feats[order]})  # fmt: skip
    tcfg = {"pool_id": "syn/teacher-g", "adaptation": "clap"}
    exp = world.experiment("e-pt", teacher_config=tcfg, strategy="pcoreset_teacher")
    prep = world.trainer.prepare(RoundRequest(exp, 0, write_teacher_targets=True))
    world.trainer.run(prep)
    meta = world.store.describe(teacher_targets_pool_id(exp, 0))
    assert meta.metadata["adaptation"] == "clap" and meta.metadata["source_pool_id"] == "syn/pool"
    assert [str(i) for i in world.store.item_ids(meta.pool_id)] == world.ids
    stored = world.store.open_array(meta.pool_id, "probs")
    assert prep.teacher_probs is not None
    np.testing.assert_array_equal(stored, prep.teacher_probs)
    assert not np.allclose(stored, world.t)  # the adapted targets, not the zero-shot ones

    plain = world.experiment("e-pc", teacher_config=tcfg)
    world.trainer.run(world.trainer.prepare(RoundRequest(plain, 0)))
    assert not world.store.exists(teacher_targets_pool_id(plain, 0))
    no_teacher = world.experiment("e-nt", teacher_pool="", student={**TINY, "kd": False})
    with pytest.raises(FailedPrecondition, match="write_teacher_targets needs the teacher"):
        world.trainer.prepare(RoundRequest(no_teacher, 0, write_teacher_targets=True))


def test_clap_adaptation_starts_from_the_head_stored_beside_the_teacher_pool(
    world: World,
) -> None:
    """A teacher pool that names its zero-shot head (open_clip's text weights, MiniLM's
    prototypes) is adapted from that head, as the in-process harness does for text; without one
    the head is fitted to the zero-shot probabilities. The two starts give different targets."""
    from activekd.teacher.head_pool import HEAD_POOL_KEY, TeacherHead, write_head

    rng = np.random.default_rng(11)
    feats = (np.eye(C)[world.y] * 2 + rng.normal(0, 0.5, (world.y.size, C))).astype(np.float32)
    protos = (np.eye(C) + rng.normal(0, 0.3, (C, C))).astype(np.float32)
    head = TeacherHead(protos, 10.0, tuple(CLASSES))
    zero_shot = head.prototypes  # the teacher's probabilities are its head's on its features
    norm = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    logits = 10.0 * norm @ zero_shot.T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    head_id = write_head(world.store, "syn/teacher-h", head)
    world.store.put(
        "syn/teacher-h", world.ids, {"probs": probs, "features": feats},
        metadata={HEAD_POOL_KEY: head_id},
    )  # fmt: skip
    world.store.put("syn/teacher-nohead", world.ids, {"probs": probs, "features": feats})
    got = {}
    for pool in ("syn/teacher-h", "syn/teacher-nohead"):
        exp = world.experiment(
            f"e-head-{pool[-1]}", teacher_config={"pool_id": pool, "adaptation": "clap"}
        )
        got[pool] = world.trainer.prepare(RoundRequest(exp, 0))
    prep = got["syn/teacher-h"]
    ref = TeacherAdapter(protos, 10.0)
    ref.fit(feats, prep.labeled_rows, prep.labels)
    np.testing.assert_allclose(prep.teacher_probs, ref.predict(feats), atol=1e-5)
    fitted = TeacherAdapter.from_zero_shot(feats, probs)
    fitted.fit(feats, prep.labeled_rows, prep.labels)
    np.testing.assert_allclose(
        got["syn/teacher-nohead"].teacher_probs, fitted.predict(feats), atol=1e-5
    )
    assert np.abs(prep.teacher_probs - got["syn/teacher-nohead"].teacher_probs).max() > 1e-3

    # a head for other features is refused, and nothing is trained on it
    write_head(world.store, "syn/teacher-h", TeacherHead(protos[:, :3], 10.0, tuple(CLASSES)))
    exp = world.experiment(
        "e-head-bad", teacher_config={"pool_id": "syn/teacher-h", "adaptation": "clap"}
    )
    with pytest.raises(FailedPrecondition, match=r"prototypes are \[4, 3\]"):
        world.trainer.prepare(RoundRequest(exp, 0))


# ---------------------------------------------------------------------------------- errors
def test_missing_inputs_name_what_is_missing(world: World) -> None:
    tr = world.trainer
    exp = world.experiment("e-missing")
    with pytest.raises(NotFound, match="'nobody' not found"):
        tr.prepare(RoundRequest("nobody", 0))
    cases = [
        (RoundRequest(exp, 0, pool_id="nope"), "pool pool 'nope' does not exist"),
        (RoundRequest(exp, 0, teacher_pool_id="gone"), "teacher pool 'gone' does not exist"),
        (RoundRequest(exp, 0, test_pool_id="no-test"), "test pool 'no-test' does not exist"),
        (RoundRequest(exp, 0, overrides={"input_array": "pixels"}), "no array 'pixels'"),
    ]
    for req, msg in cases:
        with pytest.raises(FailedPrecondition, match=msg):
            tr.prepare(req)
    no_teacher = world.experiment("e-noteacher", teacher_pool="")
    with pytest.raises(FailedPrecondition, match=r"no teacher pool for round 0.*kd=false"):
        tr.prepare(RoundRequest(no_teacher, 0))
    with pytest.raises(FailedPrecondition, match="no checkpoint for round 0: train"):
        tr.predict_pool(exp, 0)
    with pytest.raises(FailedPrecondition, match="no checkpoint for round 0"):
        tr.evaluate(exp, 0)
    with pytest.raises(NotFound, match="no checkpoint for round 0"):
        tr.checkpoint_info(exp, 0)
    with pytest.raises(NotFound):
        tr.list_checkpoints("nobody")
    assert tr.list_checkpoints(exp) == []


def test_bad_inputs_are_rejected_before_training(world: World) -> None:
    tr = world.trainer
    # a label outside [0, C) in the round state (e.g. submitted against another class list)
    exp = world.experiment("e-badlabel")
    world.client.hset(world.experiments.key_prefix(exp) + ":labels", world.ids[50], 9)
    with pytest.raises(
        FailedPrecondition, match=rf"1 label\(s\) outside \[0, 4\): {world.ids[50]}=9"
    ):
        tr.prepare(RoundRequest(exp, 0))
    # labeled ids the pool does not have
    ids, labels = world.initial()
    ghost = world.experiment("e-ghost", ids=[*ids, "ghost-1"], labels=[*labels, 0])
    with pytest.raises(FailedPrecondition, match=r"missing from the pool.*'ghost-1'"):
        tr.prepare(RoundRequest(ghost, 0))
    # no labels at all
    empty = world.experiment("e-empty")
    world.client.delete(world.experiments.key_prefix(empty) + ":labels")
    with pytest.raises(FailedPrecondition, match="has no labels for round 0 yet"):
        tr.prepare(RoundRequest(empty, 0))
    # teacher matrix with the wrong class count
    world.store.put("syn/teacher-3", world.ids, {"probs": np.full((120, 3), 1 / 3, np.float32)})
    with pytest.raises(
        FailedPrecondition, match=r"shape \[120, 3\], the student has num_classes = 4"
    ):
        tr.prepare(
            RoundRequest(exp := world.experiment("e-t3"), 0, teacher_pool_id="syn/teacher-3")
        )
    # NaN in the teacher pool: caught by validation, before any step
    t_nan = world.t.copy()
    t_nan[17] = np.nan
    world.store.put("syn/teacher-nan", world.ids, {"probs": t_nan})
    with pytest.raises(
        FailedPrecondition, match=r"teacher-nan.*row 17 is not a probability vector"
    ):
        tr.prepare(RoundRequest(exp, 0, teacher_pool_id="syn/teacher-nan"))
    assert not world.ckpt_root.exists() or not any(world.ckpt_root.rglob("*.ckpt"))


def test_nan_loss_stops_the_round_and_keeps_the_previous_checkpoint(world: World) -> None:
    exp = world.experiment("e-nan")
    first = world.trainer.train(RoundRequest(exp, 0))
    before = _sha(first.checkpoint.path)
    events: list[Any] = []
    with pytest.raises(NonFiniteLossError, match="previous checkpoint is kept") as e:
        world.trainer.train(
            RoundRequest(exp, 0, overrides={"lr": 1e30, "steps": 40, "warmup_fraction": 0.0}),
            progress=events.append,
        )
    assert 2 <= e.value.step <= 40  # step 1's loss is finite; the first huge update blows it up
    assert _sha(first.checkpoint.path) == before and _files(world, exp) == ["round-0.ckpt"]
    assert load_checkpoint(first.checkpoint.path).config.lr == TINY.get("lr", 1e-3)


def test_cancel_and_crash_leftovers_then_a_clean_rerun(world: World) -> None:
    exp = world.experiment("e-crash")
    folder = world.ckpt_root / exp
    folder.mkdir(parents=True)
    # what a save killed between write and rename leaves behind
    (folder / ".round-0.ckpt.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    cancel = threading.Event()

    def stop_after_first(ev: Any) -> None:
        cancel.set()  # at the first event (step 2): training stops right after step 3

    with pytest.raises(Aborted, match="cancelled at step 3"):
        world.trainer.train(RoundRequest(exp, 0), progress=stop_after_first, cancel=cancel)
    assert _files(world, exp) == []  # nothing saved, the leftover removed at round start
    out = world.trainer.train(RoundRequest(exp, 0))
    assert _files(world, exp) == ["round-0.ckpt"] and out.checkpoint.sha256 == _sha(
        folder / "round-0.ckpt"
    )


def test_one_round_trains_once_at_a_time(world: World) -> None:
    exp = world.experiment("e-busy")
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow(ev: Any) -> None:
        started.set()
        release.wait(30)

    def first() -> None:
        try:
            world.trainer.train(RoundRequest(exp, 0), progress=slow)
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=first)
    th.start()
    try:
        assert started.wait(30)
        with pytest.raises(Aborted, match="already training"):
            world.trainer.train(RoundRequest(exp, 0))
        world.trainer.prepare(RoundRequest(exp, 0))  # reading is fine meanwhile
    finally:
        release.set()
        th.join(60)
    assert not errors and _files(world, exp) == ["round-0.ckpt"]


def test_mlp_on_feature_vectors_without_kd(world: World) -> None:
    rng = np.random.default_rng(5)
    proj = rng.normal(size=(28 * 28, 12)).astype(np.float32) / 28
    feats = (world.x.reshape(120, -1) / 255.0).astype(np.float32) @ proj
    world.store.put("syn/pool", world.ids, {"images": world.x, "features": feats}, overwrite=True)
    test_ids = world.store.item_ids("syn/test").tolist()
    tfeats = (world.xt.reshape(40, -1) / 255.0).astype(np.float32) @ proj
    world.store.put("syn/test", test_ids, {"features": tfeats, "labels": world.yt}, overwrite=True)
    student = {"backbone": "mlp", "input_array": "features", "kd": False, "steps": 5,
               "batch_size_labeled": 8, "threads": 1}  # fmt: skip
    exp = world.experiment("e-mlp", student=student, teacher_pool="")
    out = world.trainer.train(RoundRequest(exp, 0, predict_pool=True))
    assert out.config.backbone_args["input_dim"] == 12 and not out.config.kd
    assert out.evaluation is not None and out.evaluation.kd_accuracy is None
    assert out.evaluation.num_examples == 40 and out.evaluation.teacher_agreement is None
    assert out.student_pool is not None and set(out.student_pool.arrays) == {
        "probs", "ce_probs", "ce_logits", "features"
    }  # fmt: skip
    # scoring later reads the input array name from the checkpoint
    meta, _ = world.trainer.predict_pool(exp, 0, output_pool_id="out/mlp")
    assert meta.metadata["source_pool_id"] == "syn/pool"
    np.testing.assert_allclose(
        world.store.open_array("out/mlp", "probs"),
        world.store.open_array(student_pool_id(exp, 0), "probs"),
        atol=1e-6,
    )
