"""Scoring jobs submitted through the Ray Jobs API of one real local Ray instance (dashboard on
loopback, token auth on): the CLI submits and follows a job; the teacher service hands a large
ScorePool to the cluster and streams its progress; a failed job is a clear error."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from activekd.cli import main as cli_main
from activekd.distributed.ray_jobs import JobWatch, RayJobs, entrypoint
from activekd.distributed.ray_kcenter import RayCluster
from activekd.distributed.ray_scoring import ScoringJob, StoreSpec
from activekd.errors import FailedPrecondition, Unavailable
from activekd.store import PoolStore
from tests.procs import RedisProcess, ServiceProcess

TEACHER = {"backend": "label-map", "device": "cpu"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    with RayCluster(num_cpus=2, dashboard=True) as c:
        assert os.environ["RAY_AUTH_MODE"] == "token"
        assert c.dashboard_url.startswith("http://127.0.0.1:")
        yield c


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, str]:
    from activekd.data.fashion_mnist import load_fashion_mnist

    root = tmp_path / "store"
    path = root / "inputs" / "images.npy"
    path.parent.mkdir(parents=True)
    np.save(path, np.ascontiguousarray(load_fashion_mnist("test")[0][:40]))
    return root, str(path)


def test_the_jobs_api_needs_the_token(cluster: RayCluster) -> None:
    """Ray's token auth covers the Jobs API: a request without the token is refused."""
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{cluster.dashboard_url}/api/jobs/", timeout=10)
    assert exc.value.code in (401, 403)
    assert RayJobs(cluster.dashboard_url).client().list_jobs() is not None  # with the token


def test_cli_submits_and_follows_a_scoring_job(
    cluster: RayCluster,
    images: tuple[Path, str],
    redis_server: RedisProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, ref = images
    argv = [
        "score-on-ray", "--address", cluster.dashboard_url, "--source", f"array_uri:{ref}",
        "--teacher", json.dumps(TEACHER), "--store-uri", str(root),
        "--redis-url", redis_server.url, "--dataset", "fm40", "--shard-rows", "16",
        "--python", sys.executable, "--timeout", "300",
    ]  # fmt: skip
    assert cli_main(argv) == 0
    out, err = capsys.readouterr()
    done = json.loads(out.strip().splitlines()[-1])
    assert done["rows"] == 40 and done["shard_rows"] == 16 and not done["cached"]
    assert done["shards_scored"] == 3 and done["job_id"].startswith("raysubmit_")
    assert "submitted Ray job" in err and "scored 40/40 rows" in err
    store = PoolStore(root, redis_server.client())
    meta = store.describe(done["pool_id"])
    assert meta.complete and meta.metadata["scorer"] == "ray-data"
    assert store.open_array(done["pool_id"], "probs").shape == (40, 10)


def test_cli_passes_the_source_schemes_to_the_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --source-schemes (or ACTIVEKD_SOURCE_SCHEMES) an object-storage source would be
    refused on the cluster: the flag reaches the submitted job."""
    from activekd.distributed import ray_jobs

    jobs: list[ScoringJob] = []

    class Jobs:
        def __init__(self, address: str, python: str) -> None:
            pass

        def submit(self, job: ScoringJob, store: StoreSpec) -> str:
            jobs.append(job)
            return "raysubmit_x"

        def follow(self, job_id: str, timeout: float | None) -> Iterator[dict[str, object]]:
            yield {"event": "done", "pool_id": "p"}

    monkeypatch.setattr(ray_jobs, "RayJobs", Jobs)
    monkeypatch.delenv("ACTIVEKD_SOURCE_SCHEMES", raising=False)
    base = ["score-on-ray", "--address", "http://h:8265", "--store-uri", str(tmp_path)]
    src = ["--source", "array_uri:s3://bucket/images.npy"]
    assert cli_main([*base, *src, "--source-schemes", "file,s3"]) == 0
    assert cli_main([*base, *src]) == 0
    assert [j.source_schemes for j in jobs] == ["file,s3", "file"]
    capsys.readouterr()


def test_no_credential_reaches_a_job_command_line(tmp_path: Path) -> None:
    """The Jobs API shows every job's entrypoint: Redis URLs with a credential and storage
    options are refused there (the cluster reads ACTIVEKD_REDIS_URL / ACTIVEKD_STORE_OPTIONS)."""
    from activekd.distributed.ray_jobs import has_credentials
    from activekd.errors import InvalidArgument

    job = ScoringJob(TEACHER, "array_uri", "/x.npy")
    for url in ("redis://:s3cret@redis:6379/0", "rediss://user:pw@r/0", "redis://r/0?password=x"):
        assert has_credentials(url)
        with pytest.raises(InvalidArgument, match="set ACTIVEKD_REDIS_URL on the cluster") as e:
            entrypoint(job, StoreSpec(str(tmp_path), url))
        assert "s3cret" not in str(e.value) and "pw" not in str(e.value)
    assert not has_credentials("redis://redis:6379/0") and not has_credentials("unix:///r.sock")
    with pytest.raises(InvalidArgument, match="ACTIVEKD_STORE_OPTIONS"):
        entrypoint(job, StoreSpec("s3://b/p", "", storage_options={"secret": "k"}))
    line = entrypoint(job, StoreSpec("s3://b/p", ""), "python")
    assert '"redis_url": ""' in line and "secret" not in line


def test_a_failed_job_is_a_clear_error(cluster: RayCluster, images: tuple[Path, str]) -> None:
    root, ref = images
    jobs = RayJobs(cluster.dashboard_url, python=sys.executable, poll_s=0.2)
    bad = ScoringJob({"backend": "no-such-teacher"}, "array_uri", ref)
    assert "--job" in entrypoint(bad, StoreSpec(str(root), "redis://x"), sys.executable)
    job_id = jobs.submit(bad, StoreSpec(str(root), "redis://127.0.0.1:1/0"))
    with pytest.raises(FailedPrecondition, match=f"job {job_id} ended FAILED"):
        list(jobs.follow(job_id, timeout=300))
    with pytest.raises(Unavailable, match=r"no status for job raysubmit_gone .*: retry"):
        jobs.poll(JobWatch("raysubmit_gone"))  # the SDK's RuntimeError is not INTERNAL


def test_teacher_service_hands_large_score_pools_to_the_cluster(
    cluster: RayCluster, images: tuple[Path, str], redis_server: RedisProcess
) -> None:
    """ACTIVEKD_RAY_JOBS_ADDRESS: a source of >= 30 rows is scored on the cluster (progress
    streamed, a sharded pool, the service's teacher fingerprint); a smaller one stays local;
    asking again is ScorePool's cache hit."""
    from activekd.client import TeacherClient

    root, ref = images
    env = {
        "ACTIVEKD_RAY_JOBS_ADDRESS": cluster.dashboard_url,
        "ACTIVEKD_RAY_JOBS_MIN_ROWS": "30",
        "ACTIVEKD_RAY_JOBS_SHARD_ROWS": "16",
        "ACTIVEKD_RAY_JOBS_PYTHON": sys.executable,
        "ACTIVEKD_DEVICE": "cpu",
    }
    svc = ServiceProcess("teacher", redis_server.url, str(root), env=env).start()
    try:
        with TeacherClient(svc.target, timeout=300) as c:
            c.wait_ready(timeout=120)
            big = list(c.score_pool(array_uri=ref, dataset="fm40", timeout=300))
            small = list(c.score_pool(array_uri=ref, dataset="fm20", limit=20, timeout=300))
            again = list(c.score_pool(array_uri=ref, dataset="fm40", timeout=60))
        logs = svc.logs()
    finally:
        svc.stop()
    last = big[-1]
    assert last.pool is not None and last.pool.shard_rows == 16 and last.pool.num_items == 40
    assert [m.done for m in big] == sorted(m.done for m in big) and len(big) >= 3
    assert last.pool.pool_id == f"teacher/{last.identity.fingerprint}/fm40"
    assert small[-1].pool is not None and small[-1].pool.shard_rows == 0  # below min_rows
    assert again[-1].cached and again[-1].pool is not None
    assert again[-1].pool.created_unix == last.pool.created_unix
    assert "ScorePool of large sources runs on Ray" in logs
    assert "scoring on the ray cluster" in logs
    store = PoolStore(root, redis_server.client())
    meta = store.describe(last.pool.pool_id)
    assert meta.metadata["scorer"] == "ray-data"
    assert meta.metadata["teacher_fingerprint"] == last.identity.fingerprint
    # the rows the cluster scored are the teacher's: close to the local small pool's first 20
    np.testing.assert_allclose(
        store.open_array(last.pool.pool_id, "probs")[:20],
        store.open_array(small[-1].pool.pool_id, "probs"),
        rtol=1e-4,
        atol=1e-5,
    )
