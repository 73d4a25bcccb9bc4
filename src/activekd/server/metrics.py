"""Prometheus metrics shared by every activekd service.

Two families:

* gRPC server metrics under the names go-grpc-prometheus / py-grpc-prometheus use
  (``grpc_server_started_total``, ``grpc_server_handled_total``, ``grpc_server_handling_seconds``,
  ``grpc_server_msg_received_total``, ``grpc_server_msg_sent_total``), so existing dashboards work.
  The server interceptor calls :func:`rpc_started` and :func:`rpc_handled`.
* Domain metrics prefixed ``activekd_`` (base units, ``_total`` counters, bounded labels), set
  through the small typed helpers below; services never touch the metric objects.

Labels only ever hold names from small sets (strategy, dataset, backend, loss kind, experiment up
to a cap); each such label accepts at most :data:`MAX_LABEL_VALUES` distinct values, later ones
are reported as ``"other"``. Importing this module turns off prometheus-client's ``*_created``
series for the process. No grpc import here.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import start_http_server as _start_http_server

__all__ = [
    "GRPC_CODES",
    "MAX_EXPERIMENTS_ENV",
    "MAX_LABEL_VALUES",
    "RPC_TYPES",
    "max_experiments",
    "metric_names",
    "observe_selection",
    "observe_teacher_batch",
    "observe_training_round",
    "pool_size_bucket",
    "record_round_result",
    "register_rpc_method",
    "rpc_handled",
    "rpc_msg_received",
    "rpc_msg_sent",
    "rpc_started",
    "set_service_info",
    "set_teacher_accuracy",
    "start_metrics_server",
    "stop_metrics_server",
]

RPC_TYPES = frozenset({"unary", "client_stream", "server_stream", "bidi_stream"})
GRPC_CODES = frozenset(
    {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)
MAX_EXPERIMENTS_ENV = "ACTIVEKD_METRICS_MAX_EXPERIMENTS"
DEFAULT_MAX_EXPERIMENTS = 50
MAX_LABEL_VALUES = 64
"""Distinct values accepted per bounded label (strategy, dataset, backend, kind); then "other"."""

# RPCs range from sub-millisecond lookups to minutes-long training rounds.
RPC_SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip
# Selection, teacher compute and training: tens of milliseconds to an hour.
WORK_SECONDS_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
)  # fmt: skip
QUEUE_SECONDS_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = tuple(float(2**k) for k in range(13))  # 1 .. 4096 images
POOL_SIZE_LABELS = ("1e3", "1e4", "1e5", "1e6", "1e7")

_RPC = ("grpc_service", "grpc_method", "grpc_type")

# go-grpc-prometheus exports no ``*_created`` series; neither do we (halves the series count).
disable_created_metrics()

GRPC_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _RPC)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by gRPC status code.",
    (*_RPC, "grpc_code"),
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its completion on the server.",
    _RPC,
    buckets=RPC_SECONDS_BUCKETS,
)
GRPC_MSG_RECEIVED = Counter(
    "grpc_server_msg_received_total", "Request messages received by the server.", _RPC
)
GRPC_MSG_SENT = Counter("grpc_server_msg_sent_total", "Response messages sent by the server.", _RPC)

SERVICE_INFO = Gauge(
    "activekd_service_info",
    "Always 1; labels name the service and its version.",
    ("service", "version"),
)

TEACHER_IMAGES = Counter(
    "activekd_teacher_images_total", "Images scored by the teacher.", ("backend", "dataset")
)
TEACHER_BATCH_SIZE = Histogram(
    "activekd_teacher_batch_size",
    "Images per teacher forward batch.",
    ("backend",),
    buckets=BATCH_SIZE_BUCKETS,
)
TEACHER_QUEUE_SECONDS = Histogram(
    "activekd_teacher_queue_seconds",
    "Time a teacher batch waited before compute started.",
    ("backend",),
    buckets=QUEUE_SECONDS_BUCKETS,
)
TEACHER_COMPUTE_SECONDS = Histogram(
    "activekd_teacher_compute_seconds",
    "Teacher forward time per batch.",
    ("backend",),
    buckets=WORK_SECONDS_BUCKETS,
)
TEACHER_ACCURACY = Gauge(
    "activekd_teacher_accuracy",
    "Zero-shot teacher top-1 accuracy (fraction) on a dataset.",
    ("dataset",),
)

SELECTION_SECONDS = Histogram(
    "activekd_selection_duration_seconds",
    "Time to select one batch, by strategy and pool size (power of ten at or above N).",
    ("strategy", "pool_size"),
    buckets=WORK_SECONDS_BUCKETS,
)
SELECTED_ITEMS = Counter(
    "activekd_selected_items_total", "Items returned by selection.", ("strategy",)
)

TRAINER_ROUND_SECONDS = Histogram(
    "activekd_trainer_round_duration_seconds",
    "Wall time of one student training round.",
    ("dataset",),
    buckets=WORK_SECONDS_BUCKETS,
)
TRAINER_STEPS = Counter("activekd_trainer_steps_total", "Optimizer steps taken.", ("dataset",))
TRAINER_LOSS = Gauge("activekd_trainer_loss", "Last training loss, by loss kind.", ("kind",))

ROUNDS_COMPLETED = Counter(
    "activekd_rounds_completed_total", "Active-learning rounds completed.", ("strategy", "dataset")
)
_EXP = ("experiment", "strategy", "dataset")
LABELED_ITEMS = Gauge(
    "activekd_labeled_items", "Labeled items after the experiment's latest round.", _EXP
)
STUDENT_ACCURACY = Gauge(
    "activekd_student_accuracy", "Student top-1 accuracy (fraction) after the latest round.", _EXP
)
LABEL_EFFICIENCY = Gauge(
    "activekd_label_efficiency_accuracy",
    "Student accuracy (fraction) when the experiment had `labeled` labels: one series per round, "
    "so accuracy-vs-labels curves survive rounds shorter than the scrape interval.",
    (*_EXP, "labeled"),
)
STOP_STABILITY = Gauge(
    "activekd_stop_stability",
    "Stopping signal: share of the stop set on which the latest round's student agrees with the "
    "previous round's (Bloodgood and Vijay-Shanker 2009).",
    _EXP,
)
STOP_TEACHER_AGREEMENT = Gauge(
    "activekd_stop_teacher_agreement",
    "Share of the stop set on which the latest round's student agrees with the teacher.",
    _EXP,
)
ANNOTATION_WEBHOOKS = Counter(
    "activekd_annotation_webhooks_total",
    "Label Studio webhooks received by the annotation backend, by action and outcome.",
    ("action", "outcome"),
)
ANNOTATION_LABELS = Counter(
    "activekd_annotation_labels_total",
    "Labels the annotation backend sent to the experiment, by what became of them "
    "(submitted, withdrawn, deferred, rejected).",
    ("kind",),
)
ANNOTATION_PREDICT_SECONDS = Histogram(
    "activekd_annotation_predict_seconds",
    "Time to answer one Label Studio /predict call.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
MAX_POINTS_PER_EXPERIMENT = 256


class _LabelGuard:
    """Keeps each bounded label to ``limit`` distinct values; later values become ``"other"``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, label: str, value: str) -> str:
        value = str(value).strip() or "unknown"
        with self._lock:
            seen = self._seen.setdefault(label, set())
            if value in seen:
                return value
            if len(seen) >= self.limit:
                return "other"
            seen.add(value)
            return value


_bounded = _LabelGuard(MAX_LABEL_VALUES)


def _split_method(full_method: str) -> tuple[str, str]:
    """``"/pkg.Service/Method"`` -> ``("pkg.Service", "Method")``."""
    parts = full_method.lstrip("/").split("/")
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], parts[1]
    return "unknown", full_method or "unknown"


def _rpc_labels(full_method: str, rpc_type: str) -> tuple[str, str, str]:
    if rpc_type not in RPC_TYPES:
        raise ValueError(f"rpc_type {rpc_type!r} must be one of {sorted(RPC_TYPES)}")
    service, method = _split_method(full_method)
    return service, method, rpc_type


def register_rpc_method(full_method: str, rpc_type: str) -> None:
    """Create the zero-valued series of a method so ``rate()`` works before its first call."""
    labels = _rpc_labels(full_method, rpc_type)
    GRPC_STARTED.labels(*labels)
    GRPC_HANDLING_SECONDS.labels(*labels)
    GRPC_MSG_RECEIVED.labels(*labels)
    GRPC_MSG_SENT.labels(*labels)
    GRPC_HANDLED.labels(*labels, "OK")


def rpc_started(full_method: str, rpc_type: str) -> None:
    """An RPC began. For unary and server-streaming calls this also counts the one request."""
    labels = _rpc_labels(full_method, rpc_type)
    GRPC_STARTED.labels(*labels).inc()
    if rpc_type in ("unary", "server_stream"):
        GRPC_MSG_RECEIVED.labels(*labels).inc()


def rpc_handled(full_method: str, rpc_type: str, code_name: str, seconds: float) -> None:
    """An RPC finished with status ``code_name`` (e.g. "OK") after ``seconds``.

    A successful unary or client-streaming call also counts its one response message; streaming
    responses are counted by :func:`rpc_msg_sent`.
    """
    labels = _rpc_labels(full_method, rpc_type)
    code = code_name.upper() if code_name.upper() in GRPC_CODES else "UNKNOWN"
    GRPC_HANDLED.labels(*labels, code).inc()
    GRPC_HANDLING_SECONDS.labels(*labels).observe(max(0.0, float(seconds)))
    if code == "OK" and rpc_type in ("unary", "client_stream"):
        GRPC_MSG_SENT.labels(*labels).inc()


def rpc_msg_received(full_method: str, rpc_type: str, count: int = 1) -> None:
    """Count request messages of a client- or bidi-streaming call."""
    GRPC_MSG_RECEIVED.labels(*_rpc_labels(full_method, rpc_type)).inc(count)


def rpc_msg_sent(full_method: str, rpc_type: str, count: int = 1) -> None:
    """Count response messages of a server- or bidi-streaming call."""
    GRPC_MSG_SENT.labels(*_rpc_labels(full_method, rpc_type)).inc(count)


def set_service_info(service: str, version: str) -> None:
    """Publish ``activekd_service_info{service,version} 1``."""
    SERVICE_INFO.labels(_bounded("service", service), _bounded("version", version)).set(1)


def _check_nonneg(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return value


def observe_teacher_batch(
    backend: str, dataset: str, size: int, queue_s: float, compute_s: float
) -> None:
    """Teacher batch of ``size`` images: waited ``queue_s``, computed in ``compute_s``."""
    size = int(_check_nonneg("size", size))
    queue_s, compute_s = _check_nonneg("queue_s", queue_s), _check_nonneg("compute_s", compute_s)
    backend = _bounded("backend", backend)
    TEACHER_IMAGES.labels(backend, _bounded("dataset", dataset)).inc(size)
    TEACHER_BATCH_SIZE.labels(backend).observe(size)
    TEACHER_QUEUE_SECONDS.labels(backend).observe(queue_s)
    TEACHER_COMPUTE_SECONDS.labels(backend).observe(compute_s)


def set_teacher_accuracy(dataset: str, accuracy: float) -> None:
    """Zero-shot teacher accuracy (fraction in [0, 1]) measured on ``dataset``."""
    TEACHER_ACCURACY.labels(_bounded("dataset", dataset)).set(_check_fraction("accuracy", accuracy))


def pool_size_bucket(n: int) -> str:
    """The ``pool_size`` label: the power of ten at or above ``n``, clamped to "1e3".."1e7"."""
    n = max(int(n), 1)
    exponent = min(max(math.ceil(math.log10(n) - 1e-12), 3), 7)
    return f"1e{exponent}"


def observe_selection(strategy: str, pool_size: int, seconds: float, n_selected: int) -> None:
    """One selection call over a pool of ``pool_size`` items that returned ``n_selected``."""
    strategy = _bounded("strategy", strategy)
    SELECTION_SECONDS.labels(strategy, pool_size_bucket(pool_size)).observe(
        _check_nonneg("seconds", seconds)
    )
    SELECTED_ITEMS.labels(strategy).inc(int(_check_nonneg("n_selected", n_selected)))


def observe_training_round(
    dataset: str, seconds: float, steps: int, losses: Mapping[str, float]
) -> None:
    """One student training round: wall time, optimizer steps and its last loss per kind.

    ``losses`` keys are loss kinds from a fixed set in the trainer (e.g. "ce", "kd", "total").
    Non-finite losses are recorded as NaN rather than rejected (a diverged round is worth seeing).
    """
    dataset = _bounded("dataset", dataset)
    TRAINER_ROUND_SECONDS.labels(dataset).observe(_check_nonneg("seconds", seconds))
    TRAINER_STEPS.labels(dataset).inc(int(_check_nonneg("steps", steps)))
    for kind, value in losses.items():
        value = float(value)
        TRAINER_LOSS.labels(_bounded("kind", kind)).set(value if math.isfinite(value) else math.nan)


def max_experiments() -> int:
    """Cap on experiments with label-efficiency series (env ACTIVEKD_METRICS_MAX_EXPERIMENTS)."""
    raw = os.environ.get(MAX_EXPERIMENTS_ENV, str(DEFAULT_MAX_EXPERIMENTS))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_EXPERIMENTS_ENV}={raw!r} must be an integer >= 1")
    return value


class _ExperimentSeries:
    """Each experiment's label-efficiency series, least recently updated experiment first."""

    def __init__(self) -> None:
        # experiment -> its points (strategy, dataset, labeled), oldest first
        self._points: OrderedDict[str, OrderedDict[tuple[str, str, str], None]] = OrderedDict()
        self._lock = threading.Lock()

    def record(
        self, experiment: str, strategy: str, dataset: str, labeled: int, accuracy: float
    ) -> list[str]:
        """Set the gauges; returns the experiments evicted to stay under the cap."""
        cap = max_experiments()
        evicted: list[str] = []
        point = (strategy, dataset, str(labeled))
        with self._lock:
            points = self._points.setdefault(experiment, OrderedDict())
            self._points.move_to_end(experiment)
            points[point] = None
            points.move_to_end(point)
            LABELED_ITEMS.labels(experiment, strategy, dataset).set(labeled)
            STUDENT_ACCURACY.labels(experiment, strategy, dataset).set(accuracy)
            LABEL_EFFICIENCY.labels(experiment, *point).set(accuracy)
            while len(points) > MAX_POINTS_PER_EXPERIMENT:
                dropped, _ = points.popitem(last=False)
                LABEL_EFFICIENCY.remove(experiment, *dropped)
            while len(self._points) > cap:
                old, old_points = self._points.popitem(last=False)
                for s, d in {(s, d) for s, d, _ in old_points}:
                    LABELED_ITEMS.remove(old, s, d)
                    STUDENT_ACCURACY.remove(old, s, d)
                    for gauge in (STOP_STABILITY, STOP_TEACHER_AGREEMENT):
                        with contextlib.suppress(KeyError):
                            gauge.remove(old, s, d)
                for p in old_points:
                    LABEL_EFFICIENCY.remove(old, *p)
                evicted.append(old)
        return evicted


_experiments = _ExperimentSeries()


def record_round_result(
    experiment: str, strategy: str, dataset: str, labeled_count: int, accuracy: float
) -> list[str]:
    """A finished active-learning round: the label-efficiency point (labeled count, accuracy).

    Sets ``activekd_labeled_items`` and ``activekd_student_accuracy`` (latest round) and
    ``activekd_label_efficiency_accuracy{labeled=...}`` (one series per round, at most
    :data:`MAX_POINTS_PER_EXPERIMENT`) for the experiment, and counts the round. At most
    :func:`max_experiments` experiments keep series; past that, the least recently updated
    experiment's series are all removed. Returns the evicted experiment names.
    """
    if not experiment:
        raise ValueError("experiment name must not be empty")
    labeled = int(_check_nonneg("labeled_count", labeled_count))
    acc = _check_fraction("accuracy", accuracy)
    strategy, dataset = _bounded("strategy", strategy), _bounded("dataset", dataset)
    ROUNDS_COMPLETED.labels(strategy, dataset).inc()
    return _experiments.record(experiment, strategy, dataset, labeled, acc)


def record_stop_signal(
    experiment: str,
    strategy: str,
    dataset: str,
    stability: float | None,
    teacher_agreement: float | None,
) -> None:
    """A round's stopping signal (``activekd.experiment.stopping``); None values are not set.
    The series go when the experiment's label-efficiency series are evicted."""
    if not experiment:
        raise ValueError("experiment name must not be empty")
    strategy, dataset = _bounded("strategy", strategy), _bounded("dataset", dataset)
    if stability is not None:
        STOP_STABILITY.labels(experiment, strategy, dataset).set(
            _check_fraction("stability", stability)
        )
    if teacher_agreement is not None:
        STOP_TEACHER_AGREEMENT.labels(experiment, strategy, dataset).set(
            _check_fraction("teacher_agreement", teacher_agreement)
        )


_SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
}


def metric_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Every series name the registry exposes (what PromQL can select), including families not
    yet observed: a histogram with no observation still yields ``_bucket``/``_count``/``_sum``."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in _SAMPLE_SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


_servers: dict[int, tuple[WSGIServer, threading.Thread]] = {}
_servers_lock = threading.Lock()


def start_metrics_server(port: int, host: str = "0.0.0.0") -> int:
    """Serve ``/metrics`` for the default registry on ``host:port`` in a daemon thread.

    ``port`` 0 picks a free port. Returns the bound port.
    """
    server, thread = _start_http_server(port, addr=host)
    bound = int(server.server_port)
    with _servers_lock:
        _servers[bound] = (server, thread)
    return bound


def stop_metrics_server(port: int | None = None) -> None:
    """Stop the metrics server on ``port``, or every one this process started."""
    with _servers_lock:
        ports: Iterable[int] = list(_servers) if port is None else [port]
        stopping = [_servers.pop(p) for p in ports if p in _servers]
    for server, thread in stopping:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
