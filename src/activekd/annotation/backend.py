"""The Label Studio ML backend: a small Starlette app over :class:`~.sync.AnnotationSync`.

Routes (the protocol Label Studio calls, ``label_studio/ml/api_connector.py``):

- ``GET /health``: ``{"status": "UP"}``, no secret needed (probes; Label Studio gives it 1 s);
- ``POST /setup``: checks the project's labeling config against the experiment's classes and
  answers the current ``model_version`` (3 s budget);
- ``POST /predict``: one prediction per task, in order (the model's class; score = pick rank);
- ``POST /webhook``: records ANNOTATION_CREATED / _UPDATED / ANNOTATIONS_DELETED in the ledger
  and wakes the worker; it never submits or trains itself, so it answers within Label Studio's
  1 s webhook timeout.

Every route but ``/health`` needs the shared secret: ``Authorization: Bearer <secret>`` (how the
webhook is registered) or basic auth whose password is the secret (how Label Studio calls an ML
backend). Comparison is constant-time; a wrong or missing secret gets 401 with a fixed message.
Errors answer ``{"error": ...}`` with a status from the library error (400, 404, 409, 503) and no
host detail; anything unexpected is a 500 ``{"error": "internal error"}``, logged here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from activekd.annotation.labelstudio import WEBHOOK_ACTIONS
from activekd.annotation.sync import AnnotationSync
from activekd.annotation.tasks import model_version
from activekd.errors import ActiveKDError
from activekd.server import metrics

log = logging.getLogger("activekd.annotation")

#: largest request body read (a /predict page of 100 tasks with data URLs is well below)
MAX_BODY_BYTES = 32 << 20
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
_UNAUTHORIZED = {"error": "missing or wrong credentials"}
_KNOWN_ACTIONS = frozenset(WEBHOOK_ACTIONS)


class SyncWorker:
    """Runs :meth:`AnnotationSync.sync_once` in one thread when woken (a webhook) and every
    ``resync_seconds`` after a full :meth:`AnnotationSync.resync`; errors are logged and retried
    with backoff, never fatal."""

    def __init__(self, sync: AnnotationSync, resync_seconds: float = 30.0) -> None:
        self.sync, self.resync_seconds = sync, resync_seconds
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="annotation-sync", daemon=True)
        self.last_error = ""
        self.runs = 0

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff, next_resync = 1.0, 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_resync:
                    self.sync.resync()
                    next_resync = time.monotonic() + self.resync_seconds
                report = self.sync.sync_once()
                for kind in ("submitted", "withdrawn", "deferred"):
                    metrics.ANNOTATION_LABELS.labels(kind).inc(getattr(report, kind))
                metrics.ANNOTATION_LABELS.labels("rejected").inc(len(report.rejected))
                if report.transitions or report.imported or report.submitted:
                    log.info("synced", extra={"report": report.__dict__})
                self.last_error, backoff = "", 1.0
                self.runs += 1
                wait = max(0.0, next_resync - time.monotonic())
            except Exception as exc:  # keep serving; Label Studio or a service may be back soon
                self.last_error = type(exc).__name__
                log.warning("sync failed; retrying", extra={"error": str(exc)[:300]})
                wait, backoff = backoff, min(backoff * 2, 30.0)
            self._wake.wait(wait)
            self._wake.clear()


def _authorized(request: Request, secret: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    given = ""
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            _user, _, given = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
    return bool(given) and hmac.compare_digest(given.encode(), secret.encode())


async def _json(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise _HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        import json

        return json.loads(body or b"{}")
    except ValueError:
        raise _HttpError(400, "request body is not JSON") from None


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[[Request], Awaitable[Response]]


def create_app(sync: AnnotationSync, secret: str, worker: SyncWorker | None = None) -> Starlette:
    """The ASGI app (``worker`` None: webhooks only record; tests drive ``sync`` themselves)."""

    def guarded(handler: Handler, name: str) -> Handler:
        async def run(request: Request) -> Response:
            if not _authorized(request, secret):
                return JSONResponse(
                    _UNAUTHORIZED, 401, headers={"WWW-Authenticate": 'Basic realm="activekd"'}
                )
            try:
                return await handler(request)
            except _HttpError as exc:
                return JSONResponse({"error": str(exc)}, exc.status)
            except ActiveKDError as exc:
                return JSONResponse({"error": str(exc)[:500]}, _HTTP_STATUS.get(exc.code, 400))
            except Exception as exc:
                code = getattr(exc, "code", None)
                if callable(code) and code().name in _HTTP_STATUS:  # a gRPC status from a call
                    status = _HTTP_STATUS[code().name]
                    return JSONResponse({"error": f"experiment service: {code().name}"}, status)
                log.exception("annotation backend error", extra={"route": name})
                return JSONResponse({"error": "internal error"}, 500)

        return run

    async def health(request: Request) -> Response:
        body: dict[str, Any] = {"status": "UP", "model_class": "ActiveKD"}
        if worker is not None and worker.last_error:
            body["sync"] = f"retrying after {worker.last_error}"
        return JSONResponse(body)

    async def setup(request: Request) -> Response:
        payload = await _json(request)
        schema = payload.get("schema") if isinstance(payload, dict) else None
        exp = await asyncio.to_thread(sync.experiments.get, sync.experiment_id)
        if isinstance(schema, str) and schema:
            from activekd.annotation.classes import ClassMap

            ClassMap.from_config(schema, exp.spec.class_names)  # 400 naming the differences
        return JSONResponse({"model_version": model_version(sync.experiment_id, exp.current_round)})

    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        payload = await _json(request)
        tasks = payload.get("tasks") if isinstance(payload, dict) else None
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise _HttpError(400, "body needs 'tasks': a list of task objects")
        results = await asyncio.to_thread(sync.predict, tasks)
        metrics.ANNOTATION_PREDICT_SECONDS.observe(time.perf_counter() - t0)
        return JSONResponse({"results": results})

    async def webhook(request: Request) -> Response:
        payload = await _json(request)
        if not isinstance(payload, dict):
            raise _HttpError(400, "webhook body must be a JSON object")
        action = str(payload.get("action", ""))
        if action not in _KNOWN_ACTIONS:
            action = "other"  # a bounded metric label
        try:
            changed = await asyncio.to_thread(sync.ingest, payload)
        except Exception:
            metrics.ANNOTATION_WEBHOOKS.labels(action, "refused").inc()
            raise
        metrics.ANNOTATION_WEBHOOKS.labels(action, "recorded").inc()
        if changed and worker is not None:
            worker.wake()
        return JSONResponse({"status": "ok", "changed": changed})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/setup", guarded(setup, "setup"), methods=["POST"]),
        Route("/predict", guarded(predict, "predict"), methods=["POST"]),
        Route("/webhook", guarded(webhook, "webhook"), methods=["POST"]),
    ]
    return Starlette(routes=routes)


__all__ = ["MAX_BODY_BYTES", "SyncWorker", "create_app"]
