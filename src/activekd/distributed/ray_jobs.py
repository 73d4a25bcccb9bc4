"""Pool-scoring jobs on a Ray cluster through the Ray Jobs API (the dashboard's HTTP endpoint,
``http://head:8265``; Ray's token auth applies: the client sends the token the environment gives,
``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``).

A job runs ``python -m activekd.distributed.ray_scoring`` on the cluster (:mod:`.ray_scoring`),
which prints one JSON line per finished shard; :class:`RayJobs` submits it and follows those lines.
:class:`RayScoringOffload` is what the teacher service plugs into ScorePool
(``ACTIVEKD_RAY_JOBS_ADDRESS``): sources of at least ``min_rows`` rows are scored on the cluster
by the service's own teacher (its config plus the experiment's class names), and ScorePool streams
the job's progress as it streams its own. A job whose teacher turns out different (another
fingerprint) is an error, never a silently different pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from activekd.distributed.ray_scoring import ScoringJob, StoreSpec
from activekd.errors import FailedPrecondition, InvalidArgument, Unavailable
from activekd.store import PoolStore
from activekd.teacher.base import BaseTeacher
from activekd.teacher.pool_job import ImageSource, ScoreUpdate

log = logging.getLogger("activekd.distributed.ray_jobs")

#: Ray job states after which nothing changes
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def has_credentials(url: str) -> bool:
    """Whether a URL carries a secret (user:password@, or a password/token query field)."""
    parts = urllib.parse.urlsplit(url)
    query = {k.lower() for k in urllib.parse.parse_qs(parts.query)}
    return bool(parts.password or parts.username) or bool(query & {"password", "token", "auth"})


def entrypoint(job: ScoringJob, store: StoreSpec, python: str = "python") -> str:
    """The shell command a Ray job runs for ``job``. The Jobs API shows it to anyone who may
    list jobs, so it never holds a credential: InvalidArgument for a Redis URL with one or
    for storage options (the cluster reads ``ACTIVEKD_REDIS_URL`` / ``ACTIVEKD_STORE_OPTIONS``)."""
    if has_credentials(store.redis_url):
        raise InvalidArgument(
            "the Redis URL holds a credential and would show in the Ray job's command line: "
            "leave it empty and set ACTIVEKD_REDIS_URL on the cluster",
            field="redis_url",
        )
    if store.storage_options:
        raise InvalidArgument(
            "storage options would show in the Ray job's command line: set "
            "ACTIVEKD_STORE_OPTIONS on the cluster instead",
            field="storage_options",
        )
    return shlex.join(
        [
            python,
            "-m",
            "activekd.distributed.ray_scoring",
            "--job",
            job.to_json(),
            "--store",
            json.dumps(asdict(store), sort_keys=True),
        ]
    )


@dataclass
class JobWatch:
    """What :meth:`RayJobs.poll` has seen of one job: its status and the log lines read."""

    job_id: str
    status: str = "PENDING"
    lines_read: int = 0
    done: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


class RayJobs:
    """Submits scoring jobs to the Jobs API at ``address`` and follows them.

    ``python``: the interpreter the job runs (``python`` on the cluster's image); ``poll_s``: the
    seconds between status polls."""

    def __init__(self, address: str, *, python: str = "python", poll_s: float = 0.5) -> None:
        if not address.startswith(("http://", "https://")):
            raise ValueError(f"the Ray Jobs address is an http(s) URL (dashboard), got {address!r}")
        self.address, self.python, self.poll_s = address, python, poll_s
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.address)
            except (ConnectionError, RuntimeError) as exc:
                raise Unavailable(
                    "the Ray cluster's Jobs API does not answer; retry when it is up"
                ) from exc
        return self._client

    def submit(self, job: ScoringJob, store: StoreSpec, *, submission_id: str | None = None) -> str:
        """Submit ``job``; returns the job's submission id."""
        command = entrypoint(job, store, self.python)
        try:
            return str(
                self.client().submit_job(
                    entrypoint=command,
                    submission_id=submission_id,
                    metadata={"activekd": "score-pool", "pool_id": job.pool_id or ""},
                )
            )
        except (ConnectionError, RuntimeError) as exc:
            raise Unavailable(
                "the Ray cluster's Jobs API refused or dropped the submission; retry when it is up"
            ) from exc

    def poll(self, watch: JobWatch) -> JobWatch:
        """Refresh ``watch``: the job's status and the JSON events logged since the last poll
        (``watch.events`` holds only the new ones)."""
        client = self.client()
        try:
            watch.status = str(client.get_job_status(watch.job_id).value)
            lines = str(client.get_job_logs(watch.job_id)).splitlines(keepends=True)
        except (ConnectionError, RuntimeError) as exc:  # the SDK's HTTP errors: transient
            raise Unavailable(
                f"the Ray cluster's Jobs API gave no status for job {watch.job_id} "
                f"({type(exc).__name__}): retry; a rerun keeps the shards already scored"
            ) from exc
        if lines and not lines[-1].endswith("\n") and watch.status not in TERMINAL:
            lines.pop()  # still being written: read it whole on a later poll
        watch.events = []
        for line in lines[watch.lines_read :]:
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                watch.events.append(event)
                if event.get("event") == "done":
                    watch.done = event
        watch.lines_read = len(lines)
        return watch

    def follow(self, job_id: str, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The job's events until it ends; FailedPrecondition when it did not succeed."""
        watch = JobWatch(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll(watch)
            yield from watch.events
            if watch.status in TERMINAL:
                self.check_succeeded(watch)
                return
            if deadline is not None and time.monotonic() > deadline:
                raise Unavailable(f"Ray job {job_id} is still {watch.status} after {timeout} s")
            time.sleep(self.poll_s)

    @staticmethod
    def check_succeeded(watch: JobWatch) -> dict[str, Any]:
        """The job's ``done`` event (FailedPrecondition naming the job when it failed)."""
        if watch.status != "SUCCEEDED" or watch.done is None:
            raise FailedPrecondition(
                f"the Ray scoring job {watch.job_id} ended {watch.status}; its log is on the "
                "Ray cluster (ray job logs " + watch.job_id + ")"
            )
        return watch.done

    def stop(self, job_id: str) -> None:
        """Ask the cluster to stop the job (its finished shards stay for a rerun)."""
        self.client().stop_job(job_id)


@dataclass
class RayScoringOffload:
    """ScorePool's hand-off to a Ray cluster: ``teacher`` is the service's TeacherConfig as a
    dict; sources of at least ``min_rows`` rows run there as a :class:`ScoringJob`."""

    jobs: RayJobs
    teacher: dict[str, Any]
    store: StoreSpec
    min_rows: int = 1_000_000
    shard_rows: int = 16384
    concurrency: int = 2
    num_gpus: float = 0.0
    data_roots: str = ""
    source_schemes: str = "file"

    def wants(self, total: int) -> bool:
        return total >= self.min_rows

    def job_for(
        self, teacher: BaseTeacher, source: ImageSource, pool_id: str, dataset: str, force: bool
    ) -> ScoringJob:
        """The job that scores ``source`` with exactly ``teacher`` (the experiment's classes)."""
        ident = teacher.identity
        config = {**self.teacher, "class_names": list(ident.class_names)}
        if ident.templates:
            config["templates"] = list(ident.templates)
        limit = source.total if source.total < source.full_size else 0
        return ScoringJob(
            config,
            source.kind,
            source.ref,
            limit=limit,
            dataset=dataset,
            pool_id=pool_id,
            shard_rows=self.shard_rows,
            concurrency=self.concurrency,
            num_gpus=self.num_gpus,
            force=force,
            data_roots=self.data_roots,
            source_schemes=self.source_schemes,
            expected_fingerprint=ident.fingerprint,
        )

    async def run(
        self,
        teacher: BaseTeacher,
        source: ImageSource,
        store: PoolStore,
        *,
        pool_id: str,
        dataset: str,
        force: bool,
    ) -> AsyncIterator[ScoreUpdate]:
        """Submit, stream the job's progress as ScoreUpdates, then the committed pool."""
        job = self.job_for(teacher, source, pool_id, dataset, force)
        job_id = await asyncio.to_thread(self.jobs.submit, job, self.store)
        watch, finished = JobWatch(job_id), False
        try:
            while True:
                await asyncio.to_thread(self.jobs.poll, watch)
                for event in watch.events:
                    if event.get("event") == "progress":
                        yield ScoreUpdate(
                            int(event["done"]), int(event["total"]), int(event["shards_resumed"])
                        )
                if watch.status in TERMINAL:
                    break
                await asyncio.sleep(self.jobs.poll_s)
            done = RayJobs.check_succeeded(watch)
            finished = True
        finally:
            if not finished and watch.status not in TERMINAL:  # the caller went away
                try:
                    await asyncio.to_thread(self.jobs.stop, job_id)
                except Exception:  # the job's own error (or the caller's) wins
                    log.warning("could not stop ray job", extra={"job_id": job_id})
        meta = await asyncio.to_thread(store.describe, str(done["pool_id"]))
        if meta.metadata.get("teacher_fingerprint") != teacher.identity.fingerprint:
            raise FailedPrecondition(
                f"the Ray cluster scored pool {meta.pool_id} with another teacher (fingerprint "
                f"{meta.metadata.get('teacher_fingerprint')}, this service's is "
                f"{teacher.identity.fingerprint}): give both the same teacher settings and files"
            )
        computed = 0 if done.get("cached") else meta.num_items
        yield ScoreUpdate(
            meta.num_items,
            meta.num_items,
            int(done.get("shards_resumed", 0)),
            cached=bool(done.get("cached")),
            computed=computed,
            meta=meta,
        )


__all__ = ["JobWatch", "RayJobs", "RayScoringOffload", "entrypoint"]
