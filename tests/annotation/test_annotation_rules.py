"""The annotation library without a Label Studio server: class maps, the label lifecycle rules,
the Redis ledger (real Redis), tasks and ranked predictions."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import redis

from activekd.annotation.classes import ClassMap, labeling_config, parse_choices
from activekd.annotation.ledger import AnnotationLedger
from activekd.annotation.lifecycle import (
    AnnotationRecord,
    plan,
    record_from_annotation,
    resolve,
)
from activekd.annotation.tasks import image_data_url, model_version, rank_score, round_tasks
from activekd.errors import InvalidArgument

CLASSES = ["T-shirt/top", "Trouser", "Bag"]


def _classes() -> ClassMap:
    return ClassMap.from_config(labeling_config(CLASSES), CLASSES)


def _ann(ann_id: int, choice: str | None, when: str, **kw: object) -> dict[str, object]:
    result = [] if choice is None else [
        {"from_name": "label", "to_name": "image", "type": "choices",
         "value": {"choices": [choice]}}
    ]  # fmt: skip
    return {"id": ann_id, "result": result, "updated_at": when, **kw}


TASK = {"id": 7, "data": {"item_id": "p3", "round": 0, "rank": 1}}


def test_generated_config_parses_and_maps_classes() -> None:
    ctl = parse_choices(labeling_config(CLASSES))
    assert (ctl.from_name, ctl.to_name, ctl.data_key) == ("label", "image", "image")
    assert ctl.choices == tuple(CLASSES)
    cm = _classes()
    assert cm.index("Bag") == 2 and cm.name(1) == "Trouser"


def test_mismatched_choices_are_named() -> None:
    with pytest.raises(
        InvalidArgument,
        match=r"missing from the labeling config: Bag.*not classes of the experiment: Sandal",
    ):
        ClassMap.from_config(labeling_config(["T-shirt/top", "Trouser", "Sandal"]), CLASSES)
    for bad in ("<View><Image name='i' value='$image'/></View>", "not xml <",
                '<!DOCTYPE x [<!ENTITY a "b">]><View/>'):  # fmt: skip
        with pytest.raises(InvalidArgument):
            parse_choices(bad)


def test_latest_annotation_wins_ground_truth_first_and_skips_count_as_unlabeled() -> None:
    cm = _classes()
    recs = [
        record_from_annotation(_ann(1, "Trouser", "2026-12-01T10:00:00Z"), TASK, cm),
        record_from_annotation(_ann(2, "Bag", "2026-12-01T11:00:00Z"), TASK, cm),
    ]
    assert resolve(recs) == {"p3": 2}  # the most recently updated
    gt = record_from_annotation(
        _ann(3, "T-shirt/top", "2026-12-01T09:00:00Z", ground_truth=True), TASK, cm
    )
    assert resolve([*recs, gt]) == {"p3": 0}  # ground truth beats later annotations
    skip = record_from_annotation(
        _ann(4, None, "2026-12-01T12:00:00Z", was_cancelled=True), TASK, cm
    )
    assert skip.cancelled and skip.label is None
    assert resolve([skip]) == {}  # a skip gives no label: the pick stays pending
    with pytest.raises(InvalidArgument, match="not a class"):
        record_from_annotation(_ann(5, "Sandal", "2026-12-01T12:00:00Z"), TASK, cm)
    with pytest.raises(InvalidArgument, match="item_id"):
        record_from_annotation(_ann(6, "Bag", "2026-12-01T12:00:00Z"), {"id": 9, "data": {}}, cm)


def test_plan_sends_differences_and_withdraws_what_disappeared() -> None:
    labels, withdraw = plan({"a": 1, "b": 2, "c": 0}, {"a": 1, "b": 0, "d": 2})
    assert labels == {"b": 2, "c": 0} and withdraw == ["d"]
    assert plan({"a": 1}, {"a": 1}) == ({}, [])


def test_ledger_is_idempotent_and_keeps_tombstones(redis_client: redis.Redis) -> None:
    led = AnnotationLedger(redis_client, "exp-ls")
    v1 = AnnotationRecord(1, 7, "p3", 1, 100.0)
    v2 = AnnotationRecord(1, 7, "p3", 2, 200.0)
    assert led.record(v1) and led.record(v2)
    assert not led.record(v1)  # an older version (a late retry) changes nothing
    assert not led.record(v2)  # the same version again
    assert led.get(1) == v2
    assert led.delete(1, 300.0) and not led.delete(1, 301.0)
    assert not led.record(v2)  # a replayed "created"/"updated" cannot resurrect it
    assert led.get(1).deleted and resolve(led.records()) == {}  # type: ignore[union-attr]
    assert led.live_ids() == set()
    led.mark_applied({"p3": 2, "p4": 0}, [])
    led.mark_applied({}, ["p4"])
    assert led.applied() == {"p3": 2}
    led.reject("p9", "not selected")
    assert led.rejected() == {"p9": "not selected"}
    led.mark_applied({"p9": 1}, [])
    assert led.rejected() == {}
    assert led.imported(0) is None
    led.mark_imported(0, 5)
    assert led.imported(0) == 5
    assert all(k.startswith(b"akd:ls:{exp-ls}:") for k in redis_client.keys("akd:ls:*"))


def test_tasks_carry_rank_round_and_rank_ordered_predictions() -> None:
    from PIL import Image

    cm = _classes()
    rng = np.random.default_rng(0)
    images = {f"p{i}": rng.integers(0, 255, (28, 28), dtype=np.uint8) for i in range(3)}
    tasks = round_tasks("exp", 2, ["p2", "p0", "p1"], images, {"p2": 1, "p0": 0}, cm)
    assert [t["data"]["item_id"] for t in tasks] == ["p2", "p0", "p1"]
    assert [t["data"]["rank"] for t in tasks] == [0, 1, 2]
    assert {t["data"]["round"] for t in tasks} == {2}
    scores = [t["predictions"][0]["score"] for t in tasks if "predictions" in t]
    assert scores == sorted(scores, reverse=True) == [1.0, 2 / 3]
    pred = tasks[0]["predictions"][0]
    assert pred["model_version"] == model_version("exp", 2) == "exp/round-2"
    assert pred["result"][0]["value"]["choices"] == ["Trouser"]
    assert "predictions" not in tasks[2]  # no probabilities for p1: no prediction
    url = tasks[1]["data"]["image"]
    png = base64.b64decode(url.split(",", 1)[1])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), images["p0"])
    assert rank_score(0, 4) == 1.0 and rank_score(3, 4) == 0.25
    with pytest.raises(InvalidArgument):
        rank_score(4, 4)
    with pytest.raises(InvalidArgument, match="uint8"):
        image_data_url(np.zeros((4, 4), np.float32))


class _Project:
    """Label Studio's listing at the true edge: what a pull returns (tests set it)."""

    project_id = 1

    def __init__(self) -> None:
        self.listing: list[tuple[dict[str, object], dict[str, object]]] = []

    def label_config(self) -> str:
        return labeling_config(CLASSES)

    def annotations(self) -> list[tuple[dict[str, object], dict[str, object]]]:
        return list(self.listing)


class _Experiments:
    def get(self, experiment_id: str) -> object:
        from types import SimpleNamespace

        return SimpleNamespace(spec=SimpleNamespace(class_names=CLASSES))


def test_resync_never_deletes_an_annotation_a_concurrent_webhook_recorded(
    redis_client: redis.Redis,
) -> None:
    """A webhook can record an annotation that a pull running at that moment does not list yet:
    one miss must not tombstone it; two pulls in a row without it (and no webhook) do."""
    from activekd.annotation.sync import AnnotationSync

    project = _Project()
    led = AnnotationLedger(redis_client, "exp-race")
    sync = AnnotationSync(_Experiments(), None, led, project, "exp-race")  # type: ignore[arg-type]
    ann = _ann(11, "Bag", "2026-12-01T10:00:00Z")
    assert sync.ingest({"action": "ANNOTATION_CREATED", "annotation": ann, "task": TASK}) == 1
    assert sync.resync() == 0  # the pull did not list it yet: kept
    assert resolve(led.records()) == {"p3": 2}
    project.listing = [(ann, TASK)]
    assert sync.resync() == 0 and resolve(led.records()) == {"p3": 2}  # listed now: still kept
    project.listing = []  # deleted in Label Studio while its webhook was lost
    sync.resync()
    assert resolve(led.records()) == {"p3": 2}  # one miss
    assert sync.resync() == 1 and resolve(led.records()) == {}  # the second miss tombstones it
    # a delete webhook is immediate
    ann2 = _ann(12, "Trouser", "2026-12-01T11:00:00Z")
    sync.ingest({"action": "ANNOTATION_CREATED", "annotation": ann2, "task": TASK})
    assert resolve(led.records()) == {"p3": 1}
    sync.ingest({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 12}]})
    assert resolve(led.records()) == {}
    with pytest.raises(InvalidArgument):
        sync.ingest({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "x"}]})


def test_config_reads_secrets_from_files_and_refuses_weak_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from activekd.annotation.config import AnnotationConfig

    (tmp_path / "secret").write_text("s" * 20 + "\n")
    (tmp_path / "key").write_text("ls-key\n")
    env = {
        "ACTIVEKD_ANNOTATION_EXPERIMENT": "exp",
        "ACTIVEKD_ANNOTATION_SECRET_FILE": str(tmp_path / "secret"),
        "LABEL_STUDIO_URL": "http://ls:8080",
        "LABEL_STUDIO_API_KEY_FILE": str(tmp_path / "key"),
        "LABEL_STUDIO_PROJECT": "3",
    }
    cfg = AnnotationConfig.from_env(env)
    assert (cfg.secret, cfg.label_studio_api_key, cfg.label_studio_project) == (
        "s" * 20,
        "ls-key",
        3,
    )
    assert cfg.host == "127.0.0.1" and not cfg.opens_network
    assert AnnotationConfig.from_env({**env, "ACTIVEKD_ANNOTATION_HOST": "0.0.0.0"}).opens_network
    for bad, msg in [
        ({"ACTIVEKD_ANNOTATION_SECRET_FILE": "", "ACTIVEKD_ANNOTATION_SECRET": "short"}, "16"),
        ({"ACTIVEKD_ANNOTATION_SECRET_FILE": str(tmp_path / "none")}, "cannot be read"),
        ({"LABEL_STUDIO_API_KEY_FILE": ""}, "LABEL_STUDIO_API_KEY"),
        ({"LABEL_STUDIO_PROJECT": "abc"}, "numeric"),
        ({"ACTIVEKD_ANNOTATION_EXPERIMENT": ""}, "ACTIVEKD_ANNOTATION_EXPERIMENT"),
        ({"ACTIVEKD_ANNOTATION_PORT": "x"}, "not a number"),
    ]:
        with pytest.raises(SystemExit, match=msg):
            AnnotationConfig.from_env({**env, **bad})
    with pytest.raises(SystemExit) as info:
        AnnotationConfig.from_env({**env, "ACTIVEKD_ANNOTATION_SECRET_FILE": str(tmp_path / "x")})
    assert str(tmp_path) not in str(info.value)  # no host path in the message
