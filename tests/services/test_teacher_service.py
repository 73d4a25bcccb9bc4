"""TeacherService end to end: real service processes, real Redis, real gRPC on loopback.

The service runs the Fashion-MNIST-trained tiny CLIP (tests/fixtures/teacher) on CPU; every
prediction is checked against the same teacher loaded in this process.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from activekd.client import TeacherClient
from activekd.data.fashion_mnist import load_fashion_mnist
from activekd.data.templates import FASHION_MNIST_TEMPLATES
from activekd.store import PoolStore
from activekd.teacher import TeacherConfig, create_teacher
from activekd.teacher.base import BaseTeacher
from activekd.v1 import teacher_pb2, teacher_pb2_grpc
from activekd.wire.tensors import to_proto
from tests.procs import RedisProcess, ServiceProcess
from tests.services.conftest import tiny_teacher_env

ATOL = 2e-5  # service (1 torch thread) vs in-process (default threads): float32 sum order only


@pytest.fixture(scope="module")
def local_teacher(tiny_clip_checkpoint: Path) -> BaseTeacher:
    """The service's teacher, loaded in this process."""
    return create_teacher(
        TeacherConfig(
            backend="open_clip", model="tiny-clip-32", pretrained=str(tiny_clip_checkpoint),
            templates=FASHION_MNIST_TEMPLATES, device="cpu",
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def fmnist() -> tuple[np.ndarray, np.ndarray]:
    return load_fashion_mnist("test")


@pytest.fixture
def client(teacher_service: ServiceProcess) -> Iterator[TeacherClient]:
    with TeacherClient(teacher_service.target, timeout=60) as c:
        c.wait_ready()
        yield c


@pytest.fixture
def store(teacher_service: ServiceProcess, redis_server: RedisProcess) -> Iterator[PoolStore]:
    """The service's pool store, read from the test (no flush: the service keeps its state)."""
    r = redis_server.client()
    yield PoolStore(teacher_service.store_uri, r)
    r.close()


def _code(exc: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return exc.value.code()  # type: ignore[attr-defined,no-any-return]


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _metric(svc: ServiceProcess, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{svc.metrics_port}/metrics").read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def _arr(a: np.ndarray | None) -> np.ndarray:
    assert a is not None
    return a


def _last(progress: Iterator[Any]) -> list[Any]:
    msgs = list(progress)
    assert msgs and msgs[-1].pool is not None
    return msgs


# ---------------------------------------------------------------------------------- describe
def test_describe_health_and_ignored_teacher_target(
    teacher_service: ServiceProcess, client: TeacherClient, local_teacher: BaseTeacher
) -> None:
    # the fixture sets ACTIVEKD_TEACHER_TARGET (the experiment service's); the service still started
    info = client.describe()
    assert info.fingerprint == local_teacher.identity.fingerprint
    assert info.identity.backend == "open_clip" and info.identity.model == "tiny-clip-32"
    assert list(info.identity.templates) == list(FASHION_MNIST_TEMPLATES)
    assert info.class_names == list(local_teacher.class_names)
    assert (info.num_classes, info.feature_dim) == (10, 64)
    assert (info.device, info.dtype, info.max_batch_size) == ("cpu", "float32", 32)
    with grpc.insecure_channel(teacher_service.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "activekd.v1.TeacherService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.SERVING


# ----------------------------------------------------------------------------------- predict
def test_predict_formats_match_in_process_and_bad_items_fail_alone(
    client: TeacherClient, local_teacher: BaseTeacher, fmnist: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = fmnist
    rgb = np.repeat(x[3][:, :, None], 3, axis=2)
    big = np.asarray(Image.fromarray(x[4]).resize((50, 40)))
    images: list[Any] = [
        x[0], _png(x[1]), _jpeg(x[2]), rgb, x[5][:, :, None], big,
        b"not an image", np.zeros((4, 4), np.uint8), np.zeros((28, 28, 2), np.uint8),
        x[6].astype(np.float32), _png(x[7])[:60],
    ]  # fmt: skip
    res = client.predict(images, include_features=True)
    assert [p.item_id for p in res] == [str(i) for i in range(len(images))]
    assert [p.ok for p in res] == [True] * 6 + [False] * 5
    assert {p.error_code for p in res if not p.ok} == {"INVALID_ARGUMENT"}
    assert "decode" in res[6].error_message and "4x4" in res[7].error_message
    assert "(28, 28, 2)" in res[8].error_message and "uint8" in res[9].error_message
    jpeg_pixels = np.asarray(Image.open(io.BytesIO(_jpeg(x[2]))))
    want = [x[0], x[1], jpeg_pixels, rgb, x[5], big]
    for p, img in zip(res.predictions[:6], want, strict=True):
        out = local_teacher.predict(img[None])
        assert p.probs is not None and p.features is not None
        np.testing.assert_allclose(p.probs, out.probs[0], atol=ATOL)
        np.testing.assert_allclose(p.features, out.features[0], atol=ATOL)
    assert res.identity.fingerprint == local_teacher.identity.fingerprint
    assert 0 < res.compute_seconds <= res.total_seconds
    # without include_features only the probabilities come back
    plain = client.predict([x[0]], item_ids=["item-a"])
    assert plain[0].item_id == "item-a" and plain[0].features is None
    np.testing.assert_allclose(plain[0].probs, res[0].probs, atol=1e-6)  # type: ignore[arg-type]


def test_predict_bad_calls_and_raw_bad_tensors(
    teacher_service: ServiceProcess, client: TeacherClient, fmnist: tuple[np.ndarray, np.ndarray]
) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        client.predict([])
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT and "empty" in exc.value.details()  # type: ignore[attr-defined]
    small = np.zeros((8, 8), np.uint8)
    with pytest.raises(grpc.RpcError) as exc:
        client.predict([small] * 1025)
    assert _code(exc) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # a tensor whose bytes do not match its shape, and an image with no source, fail their items
    wrong = to_proto(fmnist[0][0])
    wrong.shape[:] = [28, 27]
    req = teacher_pb2.PredictRequest(
        images=[teacher_pb2.Image(item_id="w", pixels=wrong), teacher_pb2.Image(item_id="none"),
                teacher_pb2.Image(item_id="ok", pixels=to_proto(fmnist[0][0]))]
    )  # fmt: skip
    token = os.environ.get("ACTIVEKD_CLIENT_TOKEN", "")  # the local stack's token, when auth is on
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(teacher_service.target) as ch:
        resp = teacher_pb2_grpc.TeacherServiceStub(ch).Predict(req, timeout=30, metadata=metadata)
    codes = {p.item_id: p.error.code for p in resp.predictions}
    assert codes == {"w": "INVALID_ARGUMENT", "none": "INVALID_ARGUMENT", "ok": ""}
    assert "bytes" in resp.predictions[0].error.message


def test_concurrent_predicts_share_batches(
    teacher_service: ServiceProcess, local_teacher: BaseTeacher,
    fmnist: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    x, _ = fmnist
    n = 16
    batches0 = _metric(teacher_service, "activekd_teacher_batch_size_count", backend="open_clip")
    images0 = _metric(teacher_service, "activekd_teacher_batch_size_sum", backend="open_clip")
    barrier = threading.Barrier(n)
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        with TeacherClient(teacher_service.target, timeout=60) as c:
            c.wait_ready()
            barrier.wait()
            p = c.predict([x[100 + i]])[0]
            assert p.probs is not None
            results[i] = p.probs

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == n
    want = local_teacher.predict(x[100 : 100 + n]).probs
    np.testing.assert_allclose(np.stack([results[i] for i in range(n)]), want, atol=ATOL)
    batches = _metric(teacher_service, "activekd_teacher_batch_size_count", backend="open_clip")
    images = _metric(teacher_service, "activekd_teacher_batch_size_sum", backend="open_clip")
    assert images - images0 == n
    # 16 requests released together within the 30 ms batching window: merged into fewer batches
    # (measured: 1 batch in 2 runs)
    assert batches - batches0 < n / 2


def test_predict_stream_bad_item_fails_alone(
    client: TeacherClient, local_teacher: BaseTeacher, fmnist: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = fmnist
    items: list[Any] = [(f"i{k}", x[200 + k]) for k in range(40)]
    items[5] = ("i5", b"\x89PNG broken")
    items[13] = ("i13", np.zeros((3, 28, 28), np.uint8))
    items[20] = ("i20", _png(x[220]))
    out = list(client.predict_stream(iter(items), include_features=True))
    assert [p.item_id for p in out] == [f"i{k}" for k in range(40)]
    bad = {p.item_id: p.error_code for p in out if not p.ok}
    assert bad == {"i5": "INVALID_ARGUMENT", "i13": "INVALID_ARGUMENT"}
    good = [k for k in range(40) if k not in (5, 13)]
    want = local_teacher.predict(x[200:240])
    got = np.stack([_arr(out[k].probs) for k in good])
    np.testing.assert_allclose(got, want.probs[good], atol=ATOL)
    assert all(out[k].features is not None for k in good)


# ------------------------------------------------------------------------------- set classes
def test_set_classes_per_experiment_views(
    client: TeacherClient, local_teacher: BaseTeacher, fmnist: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = fmnist
    default = client.describe()
    ident = client.set_classes(
        "exp-shoes", ["Sandal", "Sneaker", "Ankle boot"], ["a photo of a {}."]
    )
    assert list(ident.class_names) == ["Sandal", "Sneaker", "Ankle boot"]
    assert list(ident.templates) == ["a photo of a {}."]
    view = local_teacher.with_classes(["Sandal", "Sneaker", "Ankle boot"], ["a photo of a {}."])
    assert ident.fingerprint == view.identity.fingerprint != default.fingerprint
    # empty templates keep the teacher's own
    other = client.set_classes("exp-tops", ["T-shirt/top", "Shirt"])
    assert list(other.templates) == list(FASHION_MNIST_TEMPLATES)
    assert client.describe("exp-shoes").fingerprint == ident.fingerprint
    assert client.describe("exp-shoes").num_classes == 3
    assert client.describe("exp-tops").class_names == ["T-shirt/top", "Shirt"]
    # the shared teacher is unchanged, and an experiment without classes uses the default ones
    assert client.describe().fingerprint == default.fingerprint
    assert client.describe("exp-never-set").fingerprint == default.fingerprint
    res = client.predict([x[0], x[1]], experiment_id="exp-shoes")
    assert res.identity.fingerprint == ident.fingerprint
    np.testing.assert_allclose(
        np.stack([_arr(p.probs) for p in res]), view.predict(x[:2]).probs, atol=ATOL
    )
    assert client.predict([x[0]])[0].probs.shape == (10,)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("experiment", "classes", "templates", "needle"),
    [
        ("exp-bad", [], [], "class_names"),
        ("exp-bad", ["Bag", "Bag"], [], "repeat"),
        ("exp-bad", ["Bag", "Coat"], ["a photo of a thing."], "{}"),
        ("exp-bad", ["Bag", "Coat"], ["{} and {}"], "{}"),
        ("", ["Bag", "Coat"], [], "experiment_id"),
    ],
)
def test_set_classes_rejects_bad_specs(
    client: TeacherClient, experiment: str, classes: list[str], templates: list[str], needle: str
) -> None:
    before = client.describe("exp-bad").fingerprint
    with pytest.raises(grpc.RpcError) as exc:
        client.set_classes(experiment, classes, templates)
    assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in exc.value.details()  # type: ignore[attr-defined]
    assert client.describe("exp-bad").fingerprint == before  # nothing stored


# -------------------------------------------------------------------------------- score pool
def test_score_pool_builtin_registers_dataset_and_second_run_is_cached(
    teacher_service: ServiceProcess, client: TeacherClient, store: PoolStore,
    local_teacher: BaseTeacher, fmnist: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    x, y = fmnist
    fp = local_teacher.identity.fingerprint
    msgs = _last(client.score_pool(builtin="fashion-mnist:test", limit=250, chunk_size=100))
    assert [(m.done, m.cached) for m in msgs] == [(100, False), (200, False), (250, False),
                                                  (250, False)]  # fmt: skip
    pool = msgs[-1].pool
    assert pool.pool_id == f"teacher/{fp}/fashion-mnist-test-first250" and pool.complete
    assert {a.name: list(a.shape) for a in pool.arrays} == {
        "probs": [250, 10],
        "features": [250, 64],
    }
    assert pool.metadata["teacher_fingerprint"] == fp and pool.metadata["probs_source"] == "model"
    want = local_teacher.predict(x[:250])
    np.testing.assert_allclose(store.open_array(pool.pool_id, "probs"), want.probs, atol=ATOL)
    np.testing.assert_allclose(store.open_array(pool.pool_id, "features"), want.features, atol=ATOL)
    assert store.item_ids(pool.pool_id)[:3].tolist() == ["0", "1", "2"]
    # the builtin's images and labels are registered for the trainer / experiment services
    np.testing.assert_array_equal(store.open_array("datasets/fashion-mnist/test", "images"), x)
    np.testing.assert_array_equal(store.open_array("datasets/fashion-mnist/test", "labels"), y)
    computed = _metric(teacher_service, "activekd_teacher_images_total",
                       dataset="fashion-mnist-test-first250")  # fmt: skip
    assert computed == 250
    again = _last(client.score_pool(builtin="fashion-mnist:test", limit=250, chunk_size=100))
    assert len(again) == 1 and again[0].cached and again[0].pool.pool_id == pool.pool_id
    assert _metric(teacher_service, "activekd_teacher_images_total",
                   dataset="fashion-mnist-test-first250") == 250  # fmt: skip
    # force recomputes into the same pool
    forced = _last(client.score_pool(builtin="fashion-mnist:test", limit=250, chunk_size=100,
                                     force=True))  # fmt: skip
    assert not forced[-1].cached
    assert _metric(teacher_service, "activekd_teacher_images_total",
                   dataset="fashion-mnist-test-first250") == 500  # fmt: skip


def test_score_pool_folder_file_list_array_and_pool_sources(
    client: TeacherClient, store: PoolStore, local_teacher: BaseTeacher,
    fmnist: tuple[np.ndarray, np.ndarray], tmp_path: Path,
) -> None:  # fmt: skip
    x, _ = fmnist
    imgs = x[300:340]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(imgs):
        (folder / f"img-{i:03d}.png").write_bytes(_png(img))
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    want = local_teacher.predict(imgs)

    res = _last(client.score_pool(folder=str(folder), chunk_size=16))[-1]
    assert res.pool.num_items == 40 and res.pool.pool_id.startswith("teacher/")
    assert store.item_ids(res.pool.pool_id).tolist() == [f"img-{i:03d}.png" for i in range(40)]
    np.testing.assert_allclose(store.open_array(res.pool.pool_id, "probs"), want.probs, atol=ATOL)
    assert _last(client.score_pool(folder=str(folder), chunk_size=16))[-1].cached
    # a changed file changes the source signature: no stale cache hit
    (folder / "img-000.png").write_bytes(_png(x[399]))
    changed = _last(client.score_pool(folder=str(folder), chunk_size=16))[-1]
    assert not changed.cached and changed.pool.pool_id == res.pool.pool_id
    np.testing.assert_allclose(
        store.open_array(res.pool.pool_id, "probs")[0], local_teacher.predict(x[399:400]).probs[0],
        atol=ATOL,
    )  # fmt: skip

    listing = tmp_path / "list.txt"
    listing.write_text("# two images, one relative one absolute\nimgs/img-005.png\n"
                       f"{folder / 'img-007.png'}\n")  # fmt: skip
    lst = _last(client.score_pool(file_list=str(listing), dataset="my-list"))[-1]
    assert lst.pool.pool_id == f"teacher/{local_teacher.identity.fingerprint}/my-list"
    np.testing.assert_allclose(store.open_array(lst.pool.pool_id, "probs"), want.probs[[5, 7]],
                               atol=ATOL)  # fmt: skip

    npy = tmp_path / "images.npy"
    np.save(npy, imgs)
    arr = _last(client.score_pool(array_uri=str(npy), limit=30, output_pool_id="mine/arr"))[-1]
    assert arr.pool.pool_id == "mine/arr" and arr.pool.num_items == 30
    np.testing.assert_allclose(store.open_array("mine/arr", "probs"), want.probs[:30], atol=ATOL)

    store.put("svc/images-pool", [f"p{i}" for i in range(40)], {"images": imgs}, overwrite=True)
    pl = _last(client.score_pool(pool_id="svc/images-pool", chunk_size=7))[-1]
    assert store.item_ids(pl.pool.pool_id).tolist() == [f"p{i}" for i in range(40)]
    np.testing.assert_allclose(store.open_array(pl.pool.pool_id, "features"), want.features,
                               atol=ATOL)  # fmt: skip


def test_score_pool_uses_the_classes_of_the_experiment(
    client: TeacherClient, store: PoolStore, local_teacher: BaseTeacher,
    fmnist: tuple[np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    ident = client.set_classes("exp-score", ["Trouser", "Dress"])
    res = _last(
        client.score_pool(builtin="fashion-mnist:test", limit=20, experiment_id="exp-score")
    )
    assert res[-1].identity.fingerprint == ident.fingerprint
    assert res[-1].pool.pool_id == f"teacher/{ident.fingerprint}/fashion-mnist-test-first20"
    want = local_teacher.with_classes(["Trouser", "Dress"]).predict(fmnist[0][:20]).probs
    np.testing.assert_allclose(store.open_array(res[-1].pool.pool_id, "probs"), want, atol=ATOL)


@pytest.mark.parametrize(
    ("kwargs", "code", "needle"),
    [
        ({"folder": "/nonexistent/folder"}, "PERMISSION_DENIED", "data root"),
        ({"folder": "@missing-folder"}, "NOT_FOUND", "does not exist"),
        ({"folder": "@empty"}, "INVALID_ARGUMENT", "no images"),
        ({"folder": "@corrupt", "chunk_size": 2}, "INVALID_ARGUMENT", "b.png"),
        ({"file_list": "/nonexistent/list.txt"}, "PERMISSION_DENIED", "data root"),
        ({"file_list": "/etc/hostname"}, "PERMISSION_DENIED", "data root"),
        ({"file_list": "@list-missing"}, "NOT_FOUND", "gone.png"),
        ({"array_uri": "/nonexistent/a.npy"}, "PERMISSION_DENIED", "data root"),
        ({"array_uri": "http://127.0.0.1:1/a.npy"}, "PERMISSION_DENIED", "scheme"),
        ({"array_uri": "@missing-array"}, "NOT_FOUND", "does not exist"),
        ({"array_uri": "@float-array"}, "INVALID_ARGUMENT", "uint8"),
        ({"array_uri": "@two-channel"}, "INVALID_ARGUMENT", "(B, H, W)"),
        ({"pool_id": "no/such/pool"}, "NOT_FOUND", "does not exist"),
        ({"pool_id": "svc/no-images"}, "NOT_FOUND", "no 'images' array"),
        ({"builtin": "cifar-10:train"}, "INVALID_ARGUMENT", "fashion-mnist:train"),
        ({"builtin": "fashion-mnist:test", "limit": -1}, "INVALID_ARGUMENT", "limit"),
        ({"builtin": "fashion-mnist:test", "chunk_size": -5}, "INVALID_ARGUMENT", "chunk_size"),
        ({"builtin": "fashion-mnist:test", "dataset": "a/b"}, "INVALID_ARGUMENT", "dataset"),
        (
            {"builtin": "fashion-mnist:test", "output_pool_id": "../x"},
            "INVALID_ARGUMENT",
            "pool id",
        ),
    ],
)
def test_score_pool_bad_sources_leave_nothing(
    client: TeacherClient, store: PoolStore, fmnist: tuple[np.ndarray, np.ndarray], tmp_path: Path,
    kwargs: dict[str, Any], code: str, needle: str,
) -> None:  # fmt: skip
    x, _ = fmnist
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(_png(x[0]))
    (corrupt / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (corrupt / "c.png").write_bytes(_png(x[1]))
    (tmp_path / "list-missing.txt").write_text(f"{corrupt / 'a.png'}\ngone.png\n")
    np.save(tmp_path / "float-array.npy", x[:4].astype(np.float32))
    np.save(tmp_path / "two-channel.npy", np.zeros((4, 28, 28, 2), np.uint8))
    store.put("svc/no-images", ["a", "b"], {"labels": np.array([1, 2])}, overwrite=True)
    paths = {"@empty": "empty", "@corrupt": "corrupt", "@list-missing": "list-missing.txt",
             "@float-array": "float-array.npy", "@two-channel": "two-channel.npy",
             "@missing-folder": "no-such-folder", "@missing-array": "no-such.npy"}  # fmt: skip
    kw: dict[str, Any] = {
        k: str(tmp_path / paths[v]) if v in paths else v for k, v in kwargs.items()
    }
    with pytest.raises(grpc.RpcError) as exc:
        list(client.score_pool(**kw))
    assert _code(exc).name == code
    details = exc.value.details()  # type: ignore[attr-defined]
    assert needle in details
    if kwargs.get("file_list") == "/etc/hostname" and Path("/etc/hostname").is_file():
        host = Path("/etc/hostname").read_text().strip()
        assert not host or host not in details  # the outside file was never read
    if "@corrupt" in kwargs.values():
        # the first chunk (a.png, b.png) fails: no committed pool and no resumable leftovers
        pools, _ = store.list(1000)
        assert not [p.pool_id for p in pools if "corrupt" in p.pool_id]
        assert not list(store.redis.scan_iter(match="akd:pool:*corrupt*:writing"))


def test_score_pool_precomputed_cache_file_skips_the_model(
    teacher_service: ServiceProcess, client: TeacherClient, store: PoolStore,
    local_teacher: BaseTeacher,
) -> None:  # fmt: skip
    cache_dir = Path(teacher_service.env["ACTIVEKD_CACHE_DIR"])
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=300).astype(np.float16)
    path = cache_dir / "fashion-mnist-tiny-test.npz"
    np.savez_compressed(path, identity=np.array(local_teacher.identity.to_json()),
                        test_probs=probs, meta=np.array("{}"))  # fmt: skip
    try:
        before = _metric(teacher_service, "activekd_teacher_images_total")
        res = _last(client.score_pool(builtin="fashion-mnist:test", limit=280, chunk_size=128))
        pool = res[-1].pool
        assert not res[-1].cached and [m.done for m in res] == [128, 256, 280, 280]
        assert pool.metadata["probs_source"] == "precomputed:fashion-mnist-tiny-test.npz"
        assert pool.metadata["features"] == "false"
        assert [a.name for a in pool.arrays] == ["probs"]  # label-map caches carry no features
        want = probs[:280].astype(np.float32)
        want /= want.sum(1, keepdims=True)
        np.testing.assert_allclose(store.open_array(pool.pool_id, "probs"), want, atol=1e-6)
        assert _metric(teacher_service, "activekd_teacher_images_total") == before  # no compute
        # more rows than the file holds: the model runs (and features are stored)
        more = _last(client.score_pool(builtin="fashion-mnist:test", limit=320))[-1].pool
        assert more.metadata["probs_source"] == "model" and more.metadata["features"] == "true"
        assert _metric(teacher_service, "activekd_teacher_images_total") == before + 320
    finally:
        path.unlink()


# ------------------------------------------------------------------------- crash and resume
def _paced_job(
    redis_server: RedisProcess, checkpoint: Path, teacher: BaseTeacher, tmp_path: Path,
    total: int, **env: str,
) -> tuple[dict[str, str], redis.Redis, PoolStore, str, str]:  # fmt: skip
    """A teacher env pausing 250 ms after each chunk (``ACTIVEKD_SCORE_PAUSE_MS``), a Redis
    client, the store under ``tmp_path / "store"``, and the dataset and pool id its ScorePool
    of the first ``total`` Fashion-MNIST test images gets."""
    r = redis_server.client()
    dataset = f"fashion-mnist-test-first{total}"
    return (
        tiny_teacher_env(checkpoint, ACTIVEKD_SCORE_PAUSE_MS="250", **env),
        r,
        PoolStore(tmp_path / "store", r),
        dataset,
        f"teacher/{teacher.identity.fingerprint}/{dataset}",
    )


def test_score_pool_resumes_after_kill_without_recomputing(
    redis_server: RedisProcess, tiny_clip_checkpoint: Path, local_teacher: BaseTeacher,
    fmnist: tuple[np.ndarray, np.ndarray], tmp_path: Path,
) -> None:  # fmt: skip
    x, _ = fmnist
    total, chunk = 480, 40  # 12 chunks, each followed by a 250 ms pause (ACTIVEKD_SCORE_PAUSE_MS)
    env, r, store, dataset, pool_id = _paced_job(
        redis_server, tiny_clip_checkpoint, local_teacher, tmp_path, total
    )
    svc = ServiceProcess("teacher", redis_server.url, str(tmp_path / "store"), env=env).start()
    try:
        with TeacherClient(svc.target, timeout=60) as c:
            c.wait_ready()
            c.set_classes("exp-kept", ["Bag", "Coat"])
            stream = c.score_pool(builtin="fashion-mnist:test", limit=total, chunk_size=chunk)
            with pytest.raises(grpc.RpcError) as exc:
                for msg in stream:
                    if msg.done >= 2 * chunk:
                        svc.kill()  # kill -9 in the middle of the job
            assert _code(exc) == grpc.StatusCode.UNAVAILABLE
        assert not store.exists(pool_id)  # nothing committed by the killed run
    finally:
        svc.kill()

    svc = ServiceProcess("teacher", redis_server.url, str(tmp_path / "store"), env=env).start()
    try:
        with TeacherClient(svc.target, timeout=60) as c:
            c.wait_ready()
            msgs = _last(c.score_pool(builtin="fashion-mnist:test", limit=total, chunk_size=chunk))
            resumed = msgs[-1].chunks_resumed
            # at least the 2 chunks reported before the kill; not all 12 (the kill came first)
            assert 2 <= resumed < total // chunk
            assert msgs[0].chunks_resumed >= 1 and not msgs[-1].cached
            computed = _metric(svc, "activekd_teacher_images_total", dataset=dataset)
            assert computed == total - resumed * chunk  # finished chunks were not recomputed
            want = local_teacher.predict(x[:total])
            np.testing.assert_allclose(store.open_array(pool_id, "probs"), want.probs, atol=ATOL)
            np.testing.assert_allclose(store.open_array(pool_id, "features"), want.features,
                                       atol=ATOL)  # fmt: skip
            assert not list(r.scan_iter(match=f"akd:pool:{{{pool_id}}}:ranges:*"))  # cleaned up
            third = _last(c.score_pool(builtin="fashion-mnist:test", limit=total, chunk_size=chunk))
            assert len(third) == 1 and third[0].cached
            assert _metric(svc, "activekd_teacher_images_total", dataset=dataset) == computed
            # classes set before the crash are still there (kept in Redis)
            assert c.describe("exp-kept").class_names == ["Bag", "Coat"]
    finally:
        svc.stop()
        r.close()


def test_score_pool_past_its_deadline_stops_and_the_next_call_resumes(
    redis_server: RedisProcess, tiny_clip_checkpoint: Path, local_teacher: BaseTeacher,
    tmp_path: Path,
) -> None:  # fmt: skip
    """The caller's deadline passes mid-job: the call ends DEADLINE_EXCEEDED and the teacher
    stops scoring (its image counter stays put, short of the total) instead of running on for
    nobody; nothing is committed, and the next call resumes the finished chunks."""
    # 11 chunks, each followed by a 250 ms pause: > 2.7 s in all; a pool id (and an output
    # cache) of its own: a pool another test committed for the same rows would answer at once
    total, chunk = 440, 40
    env, r, store, dataset, pool_id = _paced_job(
        redis_server, tiny_clip_checkpoint, local_teacher, tmp_path, total,
        ACTIVEKD_CACHE_DIR=str(tmp_path / "c"),
    )  # fmt: skip
    svc = ServiceProcess("teacher", redis_server.url, str(tmp_path / "store"), env=env).start()
    try:
        with TeacherClient(svc.target, timeout=60) as c:
            c.wait_ready()
            with pytest.raises(grpc.RpcError) as exc:
                list(c.score_pool(builtin="fashion-mnist:test", limit=total, chunk_size=chunk,
                                  timeout=1.5))  # fmt: skip
            assert _code(exc) == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(1.0)  # the chunk under way when the deadline passed may still finish
            stopped = _metric(svc, "activekd_teacher_images_total", dataset=dataset)
            time.sleep(1.5)  # > 4 chunks' time at the paced rate: a running job would move
            assert _metric(svc, "activekd_teacher_images_total", dataset=dataset) == stopped
            assert 0 < stopped < total
            assert not store.exists(pool_id)
            msgs = _last(c.score_pool(builtin="fashion-mnist:test", limit=total, chunk_size=chunk))
            assert msgs[-1].chunks_resumed == stopped // chunk
            assert _metric(svc, "activekd_teacher_images_total", dataset=dataset) == total
    finally:
        svc.stop()
        r.close()


# ---------------------------------------------------------------------------------- startup
def test_unknown_weights_path_exits_with_clear_error(
    redis_server: RedisProcess, tiny_clip_checkpoint: Path, tmp_path: Path
) -> None:
    env = tiny_teacher_env(tiny_clip_checkpoint, ACTIVEKD_TEACHER_PRETRAINED="/nonexistent/w.pt")
    svc = ServiceProcess("teacher", redis_server.url, str(tmp_path / "store"), env=env)
    with pytest.raises(RuntimeError, match="exited with 2"):
        svc.start(timeout=120)
    errors = [json.loads(line) for line in svc.logs().splitlines() if line.startswith("{")]
    fatal = [e for e in errors if e.get("msg") == "teacher failed to load"]
    assert fatal and fatal[0]["level"] == "error"
    assert (
        "/nonexistent/w.pt does not exist" in fatal[0]["error"] and fatal[0]["code"] == "NOT_FOUND"
    )


def test_label_map_backend_small_images(redis_server: RedisProcess, tmp_path: Path) -> None:
    """The offline default backend (EfficientNet-Lite0 + label map) at 64 px: predicts, refuses
    prompt templates, accepts a class subset."""
    env = {"ACTIVEKD_TEACHER_BACKEND": "label-map", "ACTIVEKD_TEACHER_IMAGE_SIZE": "64",
           "ACTIVEKD_DEVICE": "cpu", "ACTIVEKD_THREADS": "1"}  # fmt: skip
    svc = ServiceProcess("teacher", redis_server.url, str(tmp_path / "store"), env=env).start()
    try:
        with TeacherClient(svc.target, timeout=60) as c:
            c.wait_ready()
            info = c.describe()
            assert info.identity.backend == "label-map" and "not a vision-language" in \
                info.identity.description  # fmt: skip
            assert (info.num_classes, info.feature_dim) == (10, 1280)
            x, _ = load_fashion_mnist("test")
            res = c.predict([x[0], b"junk"], include_features=True)
            assert res[0].ok and res[0].features.shape == (1280,)  # type: ignore[union-attr]
            assert abs(float(res[0].probs.sum()) - 1.0) < 1e-4  # type: ignore[union-attr]
            assert res[1].error_code == "INVALID_ARGUMENT"
            with pytest.raises(grpc.RpcError) as exc:
                c.set_classes("exp-lm", ["Bag", "Coat"], ["a photo of a {}."])
            assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT
            assert "templates" in exc.value.details()  # type: ignore[attr-defined]
            sub = c.set_classes("exp-lm", ["Bag", "Coat"])
            assert list(sub.class_names) == ["Bag", "Coat"]
            assert c.predict([x[0]], experiment_id="exp-lm")[0].probs.shape == (2,)  # type: ignore[union-attr]
    finally:
        svc.stop()
