"""SelectBatch over a stored sharded pool on a real local Ray instance (token auth on): one actor
per shard file, picks and scores equal to ``select_batch`` on the joined pool, in the library and
through a selection service that joins the running cluster with the token, as a deployment does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activekd.distributed.pool_select import ShardedRequest, ShardedSelector
from activekd.distributed.ray_kcenter import RayCluster, kcenter_on_ray_files
from activekd.errors import InvalidArgument
from activekd.selection import select_batch
from activekd.store import PoolStore
from tests.procs import RedisProcess, ServiceProcess


def _pool(n: int = 3000, seed: int = 5) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(9, 0.4), size=n).astype(np.float32)
    feats = rng.normal(size=(n, 16)).astype(np.float16)
    return [f"it-{i:05d}" for i in range(n)], probs, feats


@pytest.mark.parametrize("shard_rows", [1000, 777])
def test_shard_files_on_ray_equal_select_batch(
    cluster: RayCluster, pool_store: PoolStore, shard_rows: int
) -> None:
    """Shard sizes that are and are not a multiple of anything the engine uses (777: every
    bound cuts a chunk), with labeled rows and from the pool mean (no labeled row)."""
    ids, probs, _ = _pool()
    pool_store.put("ray/p", ids, {"probs": probs}, shard_rows=shard_rows)
    shards = pool_store.open_shards("ray/p", "probs")
    assert len(shards) == -(-3000 // shard_rows)
    labeled = np.random.default_rng(1).choice(3000, 20, replace=False)
    for lab in (labeled, np.array([], dtype=np.int64)):
        want = select_batch("pcoreset", 30, probs=probs, labeled=lab)
        got = kcenter_on_ray_files(shards, 30, centres=lab, cpus_per_worker=0.5)
        assert got.indices.tolist() == want.indices.tolist()
        np.testing.assert_array_equal(got.scores, want.scores)
        assert got.backend == f"ray:{len(shards)}"


def test_shard_file_actors_are_waited_for_once(
    cluster: RayCluster, pool_store: PoolStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One placement wait per selection (the start, not again before the picks), whose probe
    also reads the files' width and dtype (no second round-trip to the actors for them), and
    the reported setup time includes that start."""
    from activekd.distributed import ray_kcenter

    ids, probs, _ = _pool(n=1200, seed=2)
    pool_store.put("ray/w", ids, {"probs": probs}, shard_rows=500)
    waits: list[tuple[int, str]] = []
    real = ray_kcenter.wait_actors_up

    def counted(handles, cpus, timeout, probe="pid"):  # type: ignore[no-untyped-def]
        waits.append((len(handles), probe))
        return real(handles, cpus, timeout, probe)

    monkeypatch.setattr(ray_kcenter, "wait_actors_up", counted)
    shards = pool_store.open_shards("ray/w", "probs")
    got = kcenter_on_ray_files(shards, 10, cpus_per_worker=0.5)
    assert waits == [(3, "shape")]
    assert got.indices.tolist() == select_batch("pcoreset", 10, probs=probs).indices.tolist()
    assert got.stats["setup_seconds"] > 0


def test_selector_runs_pcoreset_and_coreset_over_shards(
    cluster: RayCluster, pool_store: PoolStore
) -> None:
    ids, probs, feats = _pool(n=2000, seed=8)
    pool_store.put("ray/q", ids, {"probs": probs, "features": feats}, shard_rows=600)
    sel = ShardedSelector("unused://not-connected", cpus_per_shard=0.5)
    sel._cluster = cluster  # the module's cluster is already connected
    assert sel.applies(pool_store, "ray/q", "pcoreset", plain=True)
    assert not sel.applies(pool_store, "ray/q", "pcoreset", plain=False)
    assert sel.applies(pool_store, "ray/q", "margin", plain=True)  # row-local: ray_rowwise
    assert not sel.applies(pool_store, "ray/q", "probcover", plain=True)  # needs the whole pool
    labeled, exclude = np.arange(0, 2000, 97), np.arange(5, 2000, 131)
    for strategy, array in (("pcoreset", "probs"), ("coreset", "features")):
        got = sel.select(pool_store, ShardedRequest("ray/q", strategy, 25, array, labeled, exclude))
        want = select_batch(
            strategy, 25, probs=probs, features=feats, labeled=labeled, exclude=exclude
        )
        assert got.strategy == strategy and got.indices.tolist() == want.indices.tolist()
        np.testing.assert_array_equal(got.scores, want.scores)
        assert not set(got.indices.tolist()) & (set(labeled.tolist()) | set(exclude.tolist()))
    with pytest.raises(InvalidArgument, match=r"budget 1999 must be in 1\.\.1963"):
        sel.select(pool_store, ShardedRequest("ray/q", "pcoreset", 1999, "probs", labeled, exclude))
    pool_store.put("ray/flatvec", ids, {"probs": probs[:, 0].copy()}, shard_rows=600)
    with pytest.raises(
        InvalidArgument, match=r"needs a 2-D float array; 'probs' .* float32\[2000\]"
    ):
        sel.select(
            pool_store, ShardedRequest("ray/flatvec", "pcoreset", 5, "probs", labeled, exclude)
        )
    with pytest.raises(InvalidArgument, match="needs array 'embeddings'"):
        sel.select(
            pool_store, ShardedRequest("ray/q", "coreset", 5, "embeddings", labeled, exclude)
        )
    sel._cluster = None  # the module fixture stops it


def _tied_pool(n: int = 2400) -> tuple[list[str], np.ndarray]:
    """Probabilities with many exact duplicates (scores tie across shards at every cut)."""
    rng = np.random.default_rng(21)
    base = rng.dirichlet(np.full(7, 0.5), size=n // 8).astype(np.float32)
    probs = base[rng.integers(0, len(base), size=n)]
    return [f"t-{i:05d}" for i in range(n)], probs


@pytest.mark.parametrize("shard_rows", [1000, 333])
def test_row_local_strategies_over_shards_equal_select_batch(
    cluster: RayCluster, pool_store: PoolStore, shard_rows: int
) -> None:
    """entropy / margin / least_confidence (each shard's own top, merged) and class_balanced
    (predicted classes only) give select_batch's picks and scores on the joined pool, with
    ties at the cut, a budget above one shard's rows, and labels given or not."""
    from activekd.distributed.ray_rowwise import ROW_LOCAL_ON_SHARDS, rowwise_on_ray_files

    ids, probs = _tied_pool()
    pool_store.put(f"rw/{shard_rows}", ids, {"probs": probs}, shard_rows=shard_rows)
    shards = pool_store.open_shards(f"rw/{shard_rows}", "probs")
    rng = np.random.default_rng(2)
    labeled = np.sort(rng.choice(len(ids), 40, replace=False))
    exclude = np.setdiff1d(rng.choice(len(ids), 30, replace=False), labeled)
    labels = rng.integers(0, 7, size=len(labeled))
    assert {"entropy", "margin", "least_confidence", "class_balanced"} == ROW_LOCAL_ON_SHARDS
    for strategy in sorted(ROW_LOCAL_ON_SHARDS):
        for budget, lbl, seed in ((50, None, 0), (shard_rows + 17, labels, 9)):
            want = select_batch(
                strategy,
                budget,
                probs=probs,
                labeled=labeled,
                exclude=exclude,
                labels=lbl,
                seed=seed,
            )
            got = rowwise_on_ray_files(
                shards,
                strategy,
                budget,
                labeled=labeled,
                exclude=exclude,
                labels=lbl,
                seed=seed,
                cpus_per_task=0.5,
            )
            assert got.indices.tolist() == want.indices.tolist(), (strategy, budget)
            np.testing.assert_array_equal(got.scores, want.scores)
            assert got.backend == f"ray:{len(shards)}"
            if strategy != "class_balanced":  # at most a budget of rows from each shard
                assert got.stats["rows_sent"] <= len(shards) * budget
    # the request path: labels are validated against the labeled rows
    sel = ShardedSelector("unused://not-connected", cpus_per_shard=0.5)
    sel._cluster = cluster
    req = ShardedRequest(
        f"rw/{shard_rows}", "class_balanced", 5, "probs", labeled, exclude, labels=labels[:3]
    )
    with pytest.raises(InvalidArgument, match="labels"):
        sel.select(pool_store, req)
    sel._cluster = None


@pytest.mark.parametrize("shard_rows", [500, 377])
def test_badge_over_shards_equals_select_batch(
    cluster: RayCluster, pool_store: PoolStore, shard_rows: int
) -> None:
    """BADGE with one actor per shard holding its probs and float16 features files: the picks
    of select_batch on the joined pool (scores to float32 rounding), nothing labeled or
    excluded picked; a pool without features is refused with what to fix."""
    ids, probs, feats = _pool(n=1500, seed=12)
    pool_id = f"badge/{shard_rows}"
    pool_store.put(pool_id, ids, {"probs": probs, "features": feats}, shard_rows=shard_rows)
    sel = ShardedSelector("unused://not-connected", cpus_per_shard=0.5)
    sel._cluster = cluster
    assert sel.applies(pool_store, pool_id, "badge", plain=True)
    labeled, exclude = np.arange(3, 1500, 71), np.arange(10, 1500, 113)
    for seed in (0, 4):
        req = ShardedRequest(pool_id, "badge", 30, "probs", labeled, exclude, seed=seed)
        got = sel.select(pool_store, req)
        want = select_batch(
            "badge", 30, probs=probs, features=feats, labeled=labeled, exclude=exclude, seed=seed
        )
        assert got.indices.tolist() == want.indices.tolist()
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
        assert got.strategy == "badge" and got.backend == f"ray:{-(-1500 // shard_rows)}"
        assert not set(got.indices.tolist()) & (set(labeled.tolist()) | set(exclude.tolist()))
    pool_store.put(f"{pool_id}-nofeat", ids, {"probs": probs}, shard_rows=shard_rows)
    with pytest.raises(InvalidArgument, match="needs array 'features'"):
        sel.select(
            pool_store, ShardedRequest(f"{pool_id}-nofeat", "badge", 5, "probs", labeled, exclude)
        )
    sel._cluster = None


def test_typiclust_over_shards_equals_select_batch(
    cluster: RayCluster, pool_store: PoolStore
) -> None:
    """TypiClust with Ray tasks over the float16 features shard files (k-means sample and
    picked clusters gathered, rows assigned per shard): select_batch's picks and scores."""
    ids, probs, feats = _pool(n=2000, seed=14)
    pool_store.put("tc/p", ids, {"probs": probs, "features": feats}, shard_rows=700)
    sel = ShardedSelector("unused://not-connected", cpus_per_shard=0.5)
    sel._cluster = cluster
    assert sel.applies(pool_store, "tc/p", "typiclust", plain=True)
    labeled, exclude = np.arange(1, 2000, 150), np.arange(7, 2000, 333)
    for seed in (0, 5):
        req = ShardedRequest("tc/p", "typiclust", 15, "features", labeled, exclude, seed=seed)
        got = sel.select(pool_store, req)
        want = select_batch(
            "typiclust", 15, features=feats, labeled=labeled, exclude=exclude, seed=seed
        )
        assert got.indices.tolist() == want.indices.tolist()
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
        assert got.strategy == "typiclust" and got.backend == "ray:3"
        assert got.stats["rows_gathered"] < 2000 * 3  # the sample and the picked clusters
    sel._cluster = None


def test_more_shard_actors_than_the_cluster_holds_fail_with_what_to_change(
    cluster: RayCluster, pool_store: PoolStore
) -> None:
    """5 shards x 0.5 CPU on a 2-CPU cluster: the fifth actor is never placed. The call ends
    RESOURCE_EXHAUSTED after the start timeout, naming the setting, instead of waiting forever,
    and its actors are gone: the same pool then runs with 0.4 CPU a shard."""
    from activekd.errors import ResourceExhausted

    ids, probs, feats = _pool(n=1500, seed=13)
    pool_store.put("ray/crowded", ids, {"probs": probs, "features": feats}, shard_rows=300)
    labeled, exclude = np.arange(0, 1500, 50), np.array([], dtype=np.int64)
    for strategy in ("pcoreset", "badge"):
        sel = ShardedSelector("unused://not-connected", cpus_per_shard=0.5, start_timeout=3.0)
        sel._cluster = cluster
        req = ShardedRequest("ray/crowded", strategy, 5, "probs", labeled, exclude)
        with pytest.raises(ResourceExhausted, match=r"5 shard actors of 0\.5 CPU .* 2 CPUs"):
            sel.select(pool_store, req)
        roomy = ShardedSelector("unused://not-connected", cpus_per_shard=0.4, start_timeout=60)
        roomy._cluster = cluster
        got = roomy.select(pool_store, req)
        want = select_batch(strategy, 5, probs=probs, features=feats, labeled=labeled)
        assert got.indices.tolist() == want.indices.tolist()
        sel._cluster = roomy._cluster = None


def test_select_batch_service_uses_the_sharded_pool_on_ray(
    cluster: RayCluster, redis_server: RedisProcess, tmp_path: Path
) -> None:
    """A selection service configured with the cluster's address answers SelectBatch on a pool
    uploaded sharded (UploadPool shard_rows) from Ray actors (backend ray:N in its stats path), the same picks as on the
    one-file copy of the pool, and replays the record within an experiment."""
    import ray

    from activekd.client import SelectionClient
    from activekd.state.redis_conn import connect

    ids, probs, feats = _pool(n=2500, seed=11)
    root = tmp_path / "store"
    client = connect(redis_server.url)
    store = PoolStore(root, client)
    store.put("big/flat", ids, {"probs": probs})
    address = ray.get_runtime_context().gcs_address
    env = {"ACTIVEKD_RAY_ADDRESS": address, "ACTIVEKD_RAY_CPUS_PER_SHARD": "0.25"}
    proc = ServiceProcess("selection", redis_server.url, str(root), env=env).start()
    try:
        with SelectionClient(proc.target, timeout=120) as sel:
            sel.wait_ready(timeout=120)
            info = sel.upload_pool(
                "big/sharded",
                item_ids=ids,
                arrays={"probs": probs, "features": feats},
                shard_rows=900,
            )
            assert info.shard_rows == 900
            on_ray = sel.select_batch(
                "pcoreset", 12, pool_id="big/sharded", labeled=ids[:5], experiment_id="e1"
            )
            flat = sel.select_batch("pcoreset", 12, pool_id="big/flat", labeled=ids[:5])
            again = sel.select_batch(
                "pcoreset",
                12,
                pool_id="big/sharded",
                labeled=ids[:5],
                experiment_id="e1",
                request_id=on_ray.request_id,
            )
            margin = sel.select_batch("margin", 4, pool_id="big/sharded", labeled=ids[:5])
            balanced = sel.select_batch(
                "class_balanced", 9, pool_id="big/sharded", labeled=ids[:5], seed=3
            )
            badge = sel.select_batch("badge", 7, pool_id="big/sharded", labeled=ids[:5], seed=2)
            typi = sel.select_batch("typiclust", 6, pool_id="big/sharded", labeled=ids[:5], seed=2)
        logs = proc.logs()
    finally:
        proc.stop()
        client.close()
    want = select_batch("pcoreset", 12, probs=probs, labeled=np.arange(5))
    assert on_ray.item_ids == [ids[i] for i in want.indices]
    assert flat.item_ids == on_ray.item_ids
    assert on_ray.stats["shards"] == 3 and "shards" not in flat.stats  # 3 actors vs in-process
    np.testing.assert_allclose(on_ray.scores, want.scores, rtol=0, atol=1e-6)
    assert again.replayed and again.item_ids == on_ray.item_ids
    # margin and class_balanced are row-local: one Ray task per shard file
    want_m = select_batch("margin", 4, probs=probs, labeled=np.arange(5))
    assert margin.item_ids == [ids[i] for i in want_m.indices]
    assert margin.stats["shards"] == 3
    want_b = select_batch("class_balanced", 9, probs=probs, labeled=np.arange(5), seed=3)
    assert balanced.item_ids == [ids[i] for i in want_b.indices]
    assert balanced.stats["shards"] == 3
    # badge: one actor per shard with its probs and features files
    want_g = select_batch("badge", 7, probs=probs, features=feats, labeled=np.arange(5), seed=2)
    assert badge.item_ids == [ids[i] for i in want_g.indices]
    assert badge.stats["shards"] == 3
    want_t = select_batch("typiclust", 6, features=feats, labeled=np.arange(5), seed=2)
    assert typi.item_ids == [ids[i] for i in want_t.indices]
    assert typi.stats["shards"] == 3
    assert "k-center over sharded pools runs on Ray" in logs


def test_our_errors_in_a_ray_task_keep_their_status(cluster: RayCluster) -> None:
    """A store error raised inside a shard task (e.g. a shard file gone: upload again) is not a
    retry: it keeps its own status and message. Anything else is UNAVAILABLE, without the
    remote traceback."""
    import ray

    from activekd.errors import FailedPrecondition, Unavailable

    @ray.remote(num_cpus=0.1, max_retries=0)
    def gone() -> None:
        raise FailedPrecondition("shard 3 of pool 'p' is gone from the store: upload it again")

    @ray.remote(num_cpus=0.1, max_retries=0)
    def crashes() -> None:
        raise RuntimeError("/srv/secret/host/path.npy")

    sel = ShardedSelector("unused://not-connected")
    sel._cluster = cluster
    with pytest.raises(FailedPrecondition, match="upload it again") as e:
        sel._on_ray("task", lambda: ray.get(gone.remote()))
    assert "Traceback" not in str(e.value)
    with pytest.raises(Unavailable, match="retry") as u:
        sel._on_ray("task", lambda: ray.get(crashes.remote()))
    assert "/srv" not in str(u.value)
    sel._cluster = None
