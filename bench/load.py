"""Load and soak test: N concurrent clients against the real services on loopback.

Starts Redis and the services (:class:`~activekd.orchestration.local_services.LocalServices`, auth
on; the clients use the local ``writer`` token, the least role that covers the mix), uploads one
registered pool (``--pool ROWSxCLASSES`` probabilities, default 100000x100) and a small image pool
for one experiment, then runs ``--clients`` threads for ``--seconds``, each in a closed loop
(no think time) over a seeded mix of:

- ``SelectBatch`` on the registered pool, budget ``--budget``, a fresh request id every call,
  ``pcoreset`` or ``random``, with or without an experiment (each client takes the four kinds in
  turn). Without one, only an idempotency key with a TTL is stored; with one, it is the client's
  own experiment id, replaced by a fresh one every ``--rotate`` selections, so picks never
  conflict between clients and never exhaust the pool (at most ``rotate * budget`` rows are
  excluded; one id shared by 64 clients would make them race for the same rows). Every answer is checked: ``budget`` picks,
  not replayed, and, within a client's experiment, disjoint from its earlier picks.
- ``Predict`` on the label-map teacher, 1-2 small (28x28) images; every prediction must be OK.
- ``DescribePool`` (the registered pool) and ``GetExperiment`` (the one experiment) reads.

Reported (printed as markdown, written to ``bench/results/load-*.json`` plus a PNG of RSS over
time, throughput and latency percentiles): throughput, p50/p95/p99 latency per method, status
codes per method, the RSS (``VmRSS`` from ``/proc/<pid>/status``) of every service process, Redis
and this process sampled every second, CPU seconds per process, and the RSS slope (least squares,
MiB/min) after the warm-up. Only OK and RESOURCE_EXHAUSTED are allowed: the services run with
``ACTIVEKD_MAX_CONCURRENT_PER_METHOD=SelectBatch=8,Predict=16`` by default (``--per-method``), so
calls over a cap are refused at once (the client backs off ``--backoff`` seconds and goes on with
its mix) instead of queueing behind the CPU-bound teacher or selection work. Anything else, a wrong
answer or a service that died makes the exit status 1; with ``--soak`` so does a service whose RSS
slope is over ``--slope-target`` (1 MiB/min).

    .venv/bin/python bench/load.py                         # 64 clients, 60 s, 100000x100
    .venv/bin/python bench/load.py --soak 600              # 10 minutes, RSS slope after warm-up
    .venv/bin/python bench/load.py --clients 4 --seconds 3 --pool 2000x10   # the CI smoke size

The load generator shares the machine's cores with the services (``nproc`` is in the report).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from activekd.client import (  # noqa: E402
    ClientCredentials,
    ExperimentClient,
    SelectionClient,
    TeacherClient,
)
from activekd.orchestration.local_services import LocalServices  # noqa: E402
from bench.bench_selection import clustered_probs  # noqa: E402

METHODS = ("SelectBatch", "Predict", "DescribePool", "GetExperiment")
DEFAULT_MIX = {"SelectBatch": 0.4, "Predict": 0.2, "DescribePool": 0.2, "GetExperiment": 0.2}
#: status codes a load run may see: OK, and the deliberate concurrency limit
ALLOWED_CODES = frozenset({"OK", "RESOURCE_EXHAUSTED"})
ALL_SERVICES = ("selection", "teacher", "trainer", "experiment")
POOL_ID = "load/pool"
EXP_POOL_ID = "load/exp-pool"
EXPERIMENT_ID = "load-exp"
MIB = 1024 * 1024


@dataclass
class LoadConfig:
    """One load run (see the module docstring; every field is a command-line flag)."""

    clients: int = 64
    seconds: float = 60.0
    pool_rows: int = 100_000
    pool_classes: int = 100
    budget: int = 10
    labeled: int = 10
    rotate: int = 10  # in-experiment selections per experiment id (a stationary workload)
    per_method: str = "SelectBatch=8,Predict=16"
    max_concurrent: int = 0  # 0: the services' default (ACTIVEKD_MAX_CONCURRENT_RPCS=256)
    threads: int = 1
    backoff: float = 0.05
    timeout: float = 60.0
    seed: int = 0
    warmup: float | None = None  # None: 20% of the run, at most 120 s
    sample_interval: float = 1.0
    latency_window: float | None = None  # None: seconds / 12, between 1 and 10 s
    warm: bool = True  # one call of each kind before the clock starts
    services: tuple[str, ...] = ALL_SERVICES
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    soak: bool = False
    slope_target: float = 1.0  # MiB/min
    extra_env: dict[str, str] = field(default_factory=dict)  # --service-env, wins over the rest

    def warmup_seconds(self) -> float:
        if self.warmup is not None:
            return float(self.warmup)
        return min(120.0, 0.2 * self.seconds)

    def window_seconds(self) -> float:
        if self.latency_window is not None:
            return float(self.latency_window)
        return max(1.0, min(10.0, self.seconds / 12))

    def service_env(self) -> dict[str, str]:
        env = {
            "ACTIVEKD_LOG_LEVEL": "WARNING",
            "ACTIVEKD_DEVICE": "cpu",
            "ACTIVEKD_THREADS": str(self.threads),
            "ACTIVEKD_MAX_CONCURRENT_PER_METHOD": self.per_method,
        }
        if self.max_concurrent:
            env["ACTIVEKD_MAX_CONCURRENT_RPCS"] = str(self.max_concurrent)
        return {**env, **self.extra_env}


# ------------------------------------------------------------------------------ /proc readers
def rss_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB (``VmRSS``), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def allocator_of(pid: int) -> str:
    """``jemalloc`` when the process has libjemalloc mapped, else ``glibc`` (``/proc/<pid>/maps``);
    ``unknown`` when the process is gone."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return "unknown"
    return "jemalloc" if "libjemalloc" in maps else "glibc"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (``/proc/<pid>/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    """What ran the numbers: cores (``nproc``), CPU model, memory, versions."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / MIB
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpc": grpc.__version__,
        "numpy": np.__version__,
    }


class RssSampler(threading.Thread):
    """Samples the RSS of each named pid every ``interval`` seconds (times relative to ``t0``)."""

    def __init__(self, pids: dict[str, int], interval: float, t0: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pids, self.interval, self.t0 = pids, interval, t0
        self.samples: list[dict[str, float | None]] = []
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> None:
        now = time.perf_counter()
        row: dict[str, float | None] = {name: rss_mib(pid) for name, pid in self.pids.items()}
        with self._lock:
            row["t"] = round(now - self.t0, 3)
            self.samples.append(row)

    def rebase(self, t0: float) -> float:
        """Make ``t0`` time zero (earlier samples get negative times); returns ``t0``."""
        with self._lock:
            shift = t0 - self.t0
            for row in self.samples:
                row["t"] = round(float(row["t"] or 0.0) - shift, 3)
            self.t0 = t0
        return t0

    def run(self) -> None:
        next_at = time.perf_counter()
        while not self._halt.is_set():
            self.sample()
            next_at += self.interval
            self._halt.wait(max(0.0, next_at - time.perf_counter()))

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self.sample()


# ------------------------------------------------------------------------------------ clients
class BadAnswer(Exception):
    """A call that returned OK with a wrong answer."""


class Starter:
    """The start line: clients :meth:`arrive` once their channels exist; :meth:`go` starts the
    clock for all of them at once."""

    def __init__(self, n: int) -> None:
        self.n, self.arrived = n, 0
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.started = threading.Event()
        self.t0 = self.stop_at = 0.0

    def arrive(self) -> tuple[float, float]:
        with self.lock:
            self.arrived += 1
            if self.arrived >= self.n:
                self.ready.set()
        self.started.wait()
        return self.t0, self.stop_at

    def go(self, seconds: float) -> float:
        self.t0 = time.perf_counter()
        self.stop_at = self.t0 + seconds
        self.started.set()
        return self.t0


@dataclass
class ClientResult:
    """One client's calls ``(start s since t0, method index, seconds, code)`` and findings."""

    calls: list[tuple[float, int, float, str]] = field(default_factory=list)
    variants: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # details of unexpected outcomes

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)


def run_client(
    idx: int,
    cfg: LoadConfig,
    targets: dict[str, str],
    creds: ClientCredentials,
    tag: str,
    starter: Starter,
    out: ClientResult,
) -> None:
    """One client: its own three clients (channels), a closed loop over the seeded mix."""
    rng = np.random.default_rng([cfg.seed, idx])
    weights = np.array([cfg.mix.get(m, 0.0) for m in METHODS], float)
    weights /= weights.sum()
    labeled = [f"x{i}" for i in rng.choice(cfg.pool_rows, cfg.labeled, replace=False)]
    labeled_set = set(labeled)
    images = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(2)]
    exp_gen, exp_calls = 0, 0
    exp_picks: set[str] = set()
    kw: dict[str, Any] = {"credentials": creds, "timeout": cfg.timeout}
    arrived = False
    try:
        with (
            SelectionClient(targets["selection"], **kw) as sel,
            TeacherClient(targets["teacher"], **kw) as teacher,
            ExperimentClient(targets["experiment"], **kw) as exps,
        ):
            arrived = True
            t0, stop_at = starter.arrive()
            n = selected = 0
            while time.perf_counter() < stop_at:
                op = int(rng.choice(len(METHODS), p=weights))
                method = METHODS[op]
                n += 1
                code = "OK"
                began = time.perf_counter()
                try:
                    if method == "SelectBatch":  # the four kinds in turn, from idx on
                        kind_no = idx + selected
                        in_exp = kind_no % 2 == 1
                        strategy = "pcoreset" if (kind_no // 2) % 2 == 1 else "random"
                        exp_id = f"load-{tag}-c{idx}-g{exp_gen}" if in_exp else ""
                        res = sel.select_batch(
                            strategy,
                            cfg.budget,
                            pool_id=POOL_ID,
                            labeled=labeled,
                            seed=int(rng.integers(2**31)),
                            request_id=f"{tag}-c{idx}-{n}",
                            experiment_id=exp_id,
                        )
                        kind = "experiment" if in_exp else "no-experiment"
                        out.variants[f"{strategy}/{kind}"] += 1
                        selected += 1
                        picks = set(res.item_ids)
                        if len(picks) != cfg.budget or res.replayed or picks & labeled_set:
                            raise BadAnswer(
                                f"{len(picks)} distinct picks, replayed={res.replayed}, "
                                f"labeled picked: {sorted(picks & labeled_set)[:3]}"
                            )
                        if in_exp:
                            if picks & exp_picks:
                                again = sorted(picks & exp_picks)[:3]
                                raise BadAnswer(f"{exp_id} picked {again} again")
                            exp_picks |= picks
                            exp_calls += 1
                            if exp_calls >= cfg.rotate:
                                exp_gen, exp_calls, exp_picks = exp_gen + 1, 0, set()
                    elif method == "Predict":
                        k = 1 + int(rng.integers(len(images)))
                        pred = teacher.predict(images[:k])
                        if len(pred) != k or not all(p.ok for p in pred):
                            raise BadAnswer(f"{len(pred)} predictions for {k} images, or not ok")
                    elif method == "DescribePool":
                        info = sel.describe_pool(POOL_ID)
                        if info.num_items != cfg.pool_rows or not info.complete:
                            raise BadAnswer(f"pool has {info.num_items} rows")
                    else:
                        status = exps.get(EXPERIMENT_ID)
                        if status.experiment_id != EXPERIMENT_ID:
                            raise BadAnswer(f"got experiment {status.experiment_id!r}")
                except grpc.RpcError as exc:
                    code = exc.code().name
                    if code not in ALLOWED_CODES:
                        out.problem(f"{method}: {code}: {exc.details()}")
                except BadAnswer as exc:
                    code = "BAD_ANSWER"
                    out.problem(f"{method}: {exc}")
                except Exception as exc:  # a client-side failure is a result too
                    code = f"CLIENT_{type(exc).__name__}"
                    out.problem(f"{method}: {exc!r}")
                out.calls.append((began - t0, op, time.perf_counter() - began, code))
                if code == "RESOURCE_EXHAUSTED":
                    time.sleep(cfg.backoff * (0.5 + rng.random()))
    except Exception as exc:
        out.problem(f"client {idx} failed: {exc!r}")
        out.calls.append((0.0, 0, 0.0, f"CLIENT_{type(exc).__name__}"))
    finally:
        if not arrived:
            starter.arrive()


# ------------------------------------------------------------------------------------ summary
def percentiles_ms(values: Sequence[float] | np.ndarray) -> dict[str, float] | None:
    """p50/p95/p99/mean/max in milliseconds (None for no values)."""
    arr = np.asarray(values, float) * 1000.0
    if arr.size == 0:
        return None
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "mean": round(float(arr.mean()), 2),
        "max": round(float(arr.max()), 2),
    }


def slope_mib_per_min(ts: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of RSS (MiB) over time (s), in MiB per minute."""
    if len(ts) < 3:
        return None
    slope = np.polyfit(np.asarray(ts, float), np.asarray(values, float), 1)[0]
    return round(float(slope) * 60.0, 3)


def floor_slope(ts: Sequence[float], values: Sequence[float]) -> dict[str, Any]:
    """The slope of the lowest RSS per window (30 s, or a tenth of a shorter span): a process
    whose big temporaries come and go saws up and down; its floor shows what it keeps."""
    if len(ts) < 6:
        return {"floor_window_s": None, "floor_slope_mib_per_min": None}
    span = ts[-1] - ts[0]
    window = 30.0 if span >= 300 else max(2.0, span / 10)
    bins: dict[int, list[tuple[float, float]]] = {}
    for t, v in zip(ts, values, strict=True):
        bins.setdefault(int((t - ts[0]) // window), []).append((t, v))
    lows = [min(pts, key=lambda p: p[1]) for _, pts in sorted(bins.items()) if len(pts) >= 2]
    return {
        "floor_window_s": round(window, 1),
        "floor_slope_mib_per_min": slope_mib_per_min([p[0] for p in lows], [p[1] for p in lows]),
    }


def rss_summary(
    samples: list[dict[str, float | None]], names: Sequence[str], warmup: float
) -> dict[str, dict[str, Any]]:
    """Per process: RSS at load start, end, max, and the slope of the samples after ``warmup``."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        pts = [(float(s["t"] or 0.0), s[name]) for s in samples if s.get(name) is not None]
        load = [(t, v) for t, v in pts if t >= 0]
        fit = [(t, v) for t, v in pts if t >= warmup]
        if not load:
            out[name] = {"samples": 0}
            continue
        vals = [float(v) for _, v in load if v is not None]
        fit_t = [t for t, _ in fit]
        fit_v = [float(v) for _, v in fit if v is not None]
        out[name] = {
            "samples": len(load),
            "start_mib": round(vals[0], 1),
            "end_mib": round(vals[-1], 1),
            "max_mib": round(max(vals), 1),
            "fit_from_s": warmup,
            "fit_samples": len(fit),
            "slope_mib_per_min": slope_mib_per_min(fit_t, fit_v),
            **floor_slope(fit_t, fit_v),
        }
    return out


def summarize(
    calls: list[tuple[float, int, float, str]], elapsed: float, window: float, seconds: float
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(per-method stats, per-second counts, per-window latency percentiles)."""
    methods: dict[str, Any] = {}
    per_second: dict[str, Any] = {}
    windows: dict[str, Any] = {}
    nbins = max(1, int(np.ceil(seconds)))
    nwin = max(1, int(np.ceil(seconds / window)))
    for op, method in enumerate(METHODS):
        mine = [c for c in calls if c[1] == op]
        codes = Counter(c[3] for c in mine)
        ok = [c for c in mine if c[3] == "OK"]
        rejected = [c for c in mine if c[3] == "RESOURCE_EXHAUSTED"]
        methods[method] = {
            "calls": len(mine),
            "codes": dict(sorted(codes.items())),
            "ok_per_s": round(len(ok) / elapsed, 2) if elapsed > 0 else 0.0,
            "calls_per_s": round(len(mine) / elapsed, 2) if elapsed > 0 else 0.0,
            "latency_ms": percentiles_ms([c[2] for c in ok]),
            "rejected_latency_ms": percentiles_ms([c[2] for c in rejected]),
        }
        ok_bins = np.zeros(nbins, int)
        rej_bins = np.zeros(nbins, int)
        for t, _, _, code in mine:
            b = min(nbins - 1, max(0, int(t)))
            if code == "OK":
                ok_bins[b] += 1
            elif code == "RESOURCE_EXHAUSTED":
                rej_bins[b] += 1
        per_second[method] = {"ok": ok_bins.tolist(), "rejected": rej_bins.tolist()}
        rows: dict[str, list[float | None]] = {"t": [], "p50": [], "p95": [], "p99": []}
        for w in range(nwin):
            lo, hi = w * window, (w + 1) * window
            lat = [c[2] for c in ok if lo <= c[0] < hi]
            pct = percentiles_ms(lat)
            rows["t"].append(lo + window / 2)
            for key in ("p50", "p95", "p99"):
                rows[key].append(pct[key] if pct else None)
        windows[method] = rows
    return methods, per_second, windows


# ---------------------------------------------------------------------------------------- run
def _setup(stack: LocalServices, cfg: LoadConfig, creds: ClientCredentials) -> dict[str, Any]:
    """Upload the pools, create the experiment, warm every method once (outside the clock)."""
    t = time.perf_counter()
    probs = clustered_probs(cfg.pool_rows, cfg.pool_classes, k=min(50, cfg.pool_classes), seed=0)
    ids = [f"x{i}" for i in range(cfg.pool_rows)]
    rng = np.random.default_rng(cfg.seed)
    images = rng.integers(0, 256, (32, 28, 28), dtype=np.uint8)
    labels = np.arange(32, dtype=np.int64) % 10
    timings: dict[str, float] = {}
    with (
        SelectionClient(stack.target("selection"), credentials=creds, timeout=600) as sel,
        ExperimentClient(stack.target("experiment"), credentials=creds, timeout=120) as exps,
        TeacherClient(stack.target("teacher"), credentials=creds, timeout=120) as teacher,
    ):
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        sel.upload_pool(POOL_ID, item_ids=ids, arrays={"probs": probs})
        timings["upload_s"] = round(time.perf_counter() - t, 3)
        sel.upload_pool(
            EXP_POOL_ID,
            item_ids=[f"e{i}" for i in range(32)],
            arrays={"images": images, "labels": labels},
        )
        exps.create(
            {
                "pool_id": EXP_POOL_ID,
                "class_names": [f"class{i}" for i in range(10)],
                "strategy": "pcoreset",
                "initial_item_ids": [f"e{i}" for i in range(10)],
                "initial_labels": list(range(10)),
                "budget_per_round": 5,
                "num_rounds": 1,
            },
            experiment_id=EXPERIMENT_ID,
        )
        warm: dict[str, Callable[[], object]] = {
            "pcoreset": lambda: sel.select_batch("pcoreset", cfg.budget, pool_id=POOL_ID),
            "random": lambda: sel.select_batch("random", cfg.budget, pool_id=POOL_ID),
            "predict": lambda: teacher.predict([images[0]]),
            "describe": lambda: sel.describe_pool(POOL_ID),
            "get": lambda: exps.get(EXPERIMENT_ID),
        }
        for name, call in warm.items() if cfg.warm else ():  # first calls load / compile
            t = time.perf_counter()
            call()
            timings[f"warm_{name}_s"] = round(time.perf_counter() - t, 3)
    timings["generate_pool_s"] = round(gen_s, 3)
    return timings


def server_connections(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (``/proc/net/tcp{,6}``)."""
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def run_load(cfg: LoadConfig, root: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the stack in ``root``, run the load, stop the stack; returns the result dict."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t_boot = time.perf_counter()
    stack = LocalServices(root, env=cfg.service_env())
    stack.start(names=cfg.services)
    results = [ClientResult() for _ in range(cfg.clients)]
    try:
        boot_s = time.perf_counter() - t_boot
        log(f"services up in {boot_s:.1f} s: {', '.join(stack.services)}")
        creds = stack.credentials("writer")  # the least role that covers the mix
        assert stack.redis is not None and stack.redis.proc is not None
        pids = {name: svc.proc.pid for name, svc in stack.services.items() if svc.proc}
        pids["redis"] = stack.redis.proc.pid
        pids["loadgen"] = os.getpid()
        sampler = RssSampler(pids, cfg.sample_interval, time.perf_counter())
        sampler.start()
        timings = _setup(stack, cfg, creds)
        timings["services_start_s"] = round(boot_s, 3)
        log(f"setup: {timings}")
        targets = {name: stack.target(name) for name in ("selection", "teacher", "experiment")}
        tag = uuid.uuid4().hex[:8]
        starter = Starter(cfg.clients)
        threads = [
            threading.Thread(
                target=run_client,
                args=(i, cfg, targets, creds, tag, starter, results[i]),
                name=f"load-client-{i}",
                daemon=True,
            )
            for i in range(cfg.clients)
        ]
        for th in threads:
            th.start()
        starter.ready.wait(60)
        pre_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = sampler.rebase(starter.go(cfg.seconds))
        log(f"load: {cfg.clients} clients for {cfg.seconds:g} s")
        connections: dict[str, int] = {}
        mid = t0 + cfg.seconds / 2
        running: list[threading.Thread] = []
        while running := [th for th in threads if th.is_alive()]:
            if not connections and time.perf_counter() >= mid:
                connections = {
                    name: server_connections(int(stack.target(name).rsplit(":", 1)[1]))
                    for name in targets
                }
            if time.perf_counter() > t0 + cfg.seconds + cfg.timeout + 30:
                log(f"{len(running)} clients did not stop in time")
                break
            running[0].join(0.5)
        elapsed = time.perf_counter() - t0
        post_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        sampler.stop()
        alive = {name: svc.proc is not None and svc.proc.poll() is None
                 for name, svc in stack.services.items()}  # fmt: skip
        allocators = {
            name: allocator_of(svc.proc.pid)
            for name, svc in stack.services.items()
            if svc.proc is not None
        }
        rclient = stack.redis.client()
        used = int(rclient.info("memory")["used_memory"])
        redis_state = {"keys": int(rclient.dbsize()), "used_memory_mib": round(used / MIB, 2)}
        rclient.close()
    finally:
        for svc in stack.services.values():  # all at once: each takes ~1 s to shut down
            if svc.proc is not None and svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGTERM)
        stack.stop()  # waits for each, then stops Redis
    calls = [c for r in results for c in r.calls]
    variants: Counter[str] = Counter()
    for r in results:
        variants.update(r.variants)
    problems = [p for r in results for p in r.problems][:20]
    methods, per_second, windows = summarize(calls, elapsed, cfg.window_seconds(), cfg.seconds)
    codes = Counter(c[3] for c in calls)
    unexpected = {k: v for k, v in codes.items() if k not in ALLOWED_CODES}
    warmup = cfg.warmup_seconds()
    rss = rss_summary(sampler.samples, list(pids), warmup)
    cpu = {
        name: round(after - before, 2)
        for name, before in pre_cpu.items()
        if before is not None and (after := post_cpu.get(name)) is not None
    }
    over = {
        name: rss[name]["slope_mib_per_min"]
        for name in cfg.services
        if (rss[name].get("slope_mib_per_min") or 0.0) > cfg.slope_target
    }
    ok_calls = codes.get("OK", 0)
    return {
        "kind": "soak" if cfg.soak else "load",
        "started_utc": started,
        "machine": machine(),
        "config": {**asdict(cfg), "services": list(cfg.services), "warmup_s": warmup},
        "service_env": cfg.service_env(),
        "setup": timings,
        "elapsed_s": round(elapsed, 3),  # the calls in flight at the end finish (drain)
        "drain_s": round(elapsed - cfg.seconds, 3),
        "totals": {
            "calls": len(calls),
            "ok": ok_calls,
            "resource_exhausted": codes.get("RESOURCE_EXHAUSTED", 0),
            "ok_per_s": round(ok_calls / elapsed, 2),
            "calls_per_s": round(len(calls) / elapsed, 2),
            "codes": dict(sorted(codes.items())),
        },
        "methods": methods,
        "selection_variants": dict(sorted(variants.items())),
        "unexpected_codes": unexpected,
        "problems": problems,
        "alive": alive,
        "allocators": allocators,  # what each service really ran on (its mapped libraries)
        "stuck_clients": len(running),
        "server_connections_mid_run": connections,
        "cpu_seconds": cpu,
        "cpu_cores_used": {k: round(v / elapsed, 2) for k, v in cpu.items()},
        "rss": {
            "interval_s": cfg.sample_interval,
            "summary": rss,
            "samples": {k: [row.get(k) for row in sampler.samples] for k in ["t", *pids]},
        },
        "rss_over_target": over,
        "redis": redis_state,
        "per_second": per_second,
        "latency_windows": {"window_s": cfg.window_seconds(), "methods": windows},
        "ok": not unexpected and not running and all(alive.values()) and not (cfg.soak and over),
    }


# ------------------------------------------------------------------------------------ outputs
def markdown(result: dict[str, Any]) -> str:
    """The result as markdown tables (machine, per-method numbers, RSS)."""
    m, cfg, tot = result["machine"], result["config"], result["totals"]
    lines = [
        f"**{result['kind']}** {result['started_utc']}: {cfg['clients']} clients, "
        f"{result['elapsed_s']:.0f} s, pool {cfg['pool_rows']}x{cfg['pool_classes']}, "
        f"budget {cfg['budget']}, per-method limit `{cfg['per_method'] or 'none'}`, "
        f"ACTIVEKD_THREADS={cfg['threads']}",
        f"machine: nproc={m['nproc']}, {m['cpu_model']}, {m['mem_total_gib']} GiB, "
        f"Python {m['python']}, grpc {m['grpc']}",
        f"total: {tot['calls']} calls, {tot['ok']} OK ({tot['ok_per_s']}/s), "
        f"{tot['resource_exhausted']} RESOURCE_EXHAUSTED, codes {tot['codes']}",
        "",
        "| method | calls | OK/s | codes | p50 ms | p95 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in result["methods"].items():
        lat = s["latency_ms"] or {}
        codes = ", ".join(f"{k} {v}" for k, v in s["codes"].items())
        lines.append(
            f"| {name} | {s['calls']} | {s['ok_per_s']} | {codes} | {lat.get('p50', '-')} | "
            f"{lat.get('p95', '-')} | {lat.get('p99', '-')} | {lat.get('max', '-')} |"
        )
    lines += [
        "",
        f"| process | RSS start MiB | end MiB | max MiB | slope after {cfg['warmup_s']:g} s "
        "(MiB/min) | floor slope (MiB/min) | CPU s | cores |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in result["rss"]["summary"].items():
        lines.append(
            f"| {name} | {s.get('start_mib', '-')} | {s.get('end_mib', '-')} | "
            f"{s.get('max_mib', '-')} | {s.get('slope_mib_per_min', '-')} | "
            f"{s.get('floor_slope_mib_per_min', '-')} | "
            f"{result['cpu_seconds'].get(name, '-')} | {result['cpu_cores_used'].get(name, '-')} |"
        )
    lines += [
        "",
        f"selection variants: {result['selection_variants']}; redis: {result['redis']}; "
        f"connections mid-run: {result['server_connections_mid_run']}; "
        f"alive: {result['alive']}; allocators: {result.get('allocators', '?')}; "
        f"ok: {result['ok']}",
    ]
    if result["problems"]:
        lines += ["", "problems:", *(f"- {p}" for p in result["problems"])]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """RSS over time, throughput per second and latency percentiles per method (one PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), constrained_layout=True)
    ax = axes[0][0]
    samples = result["rss"]["samples"]
    for name in result["rss"]["summary"]:
        pts = [(t, v) for t, v in zip(samples["t"], samples[name], strict=True) if v is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.axvline(result["config"]["warmup_s"], color="grey", lw=0.8, ls=":")
    ax.set(title="RSS (VmRSS, 1 s samples; -- load start, : end of warm-up)", xlabel="s",
           ylabel="MiB")  # fmt: skip
    ax.legend(fontsize=7)
    ax = axes[0][1]
    for name, s in result["per_second"].items():
        ax.plot(np.arange(len(s["ok"])) + 0.5, s["ok"], label=f"{name} OK")
        if any(s["rejected"]):
            ax.plot(np.arange(len(s["rejected"])) + 0.5, s["rejected"], ls=":",
                    label=f"{name} RESOURCE_EXHAUSTED")  # fmt: skip
    ax.set(title="calls per second", xlabel="s", ylabel="calls/s")
    ax.legend(fontsize=7)
    cells = [axes[0][2], axes[1][0], axes[1][1], axes[1][2]]
    for ax, (name, w) in zip(cells, result["latency_windows"]["methods"].items(), strict=False):
        for key, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ts = [t for t, v in zip(w["t"], w[key], strict=True) if v is not None]
            vs = [v for v in w[key] if v is not None]
            ax.plot(ts, vs, style, marker=".", label=key)
        ax.set_yscale("log")
        window = result["latency_windows"]["window_s"]
        ax.set(title=f"{name} latency (OK calls, {window:g} s windows)", xlabel="s", ylabel="ms")
        ax.legend(fontsize=7)
    cfg, m = result["config"], result["machine"]
    fig.suptitle(
        f"activekd {result['kind']}: {cfg['clients']} clients, {result['elapsed_s']:.0f} s, "
        f"pool {cfg['pool_rows']}x{cfg['pool_classes']}, nproc={m['nproc']}"
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)


def to_json(value: Any, indent: int = 0) -> str:
    """JSON with one key per line but each list of numbers (the time series) on one line."""
    pad = " " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(str(k))}: {to_json(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, list | tuple) and any(isinstance(v, dict | list) for v in value):
        return (
            "[\n"
            + ",\n".join(pad + to_json(v, indent + 1) for v in value)
            + "\n"
            + " " * indent
            + "]"
        )
    return json.dumps(value, separators=(", ", ": "))


def parse_pool(text: str) -> tuple[int, int]:
    rows, sep, cols = text.lower().partition("x")
    try:
        if not sep:
            raise ValueError
        return int(rows), int(cols)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pool {text!r} is not ROWSxCLASSES") from None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                    help="soak for SECONDS instead (e.g. 600): the RSS slope must stay under "
                    "--slope-target")  # fmt: skip
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds left out of the RSS fit (default 20%% of the run, <= 120)")  # fmt: skip
    ap.add_argument("--pool", type=parse_pool, default=(100_000, 100), metavar="ROWSxCLASSES")
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--rotate", type=int, default=10)
    ap.add_argument("--per-method", default="SelectBatch=8,Predict=16",
                    help="ACTIVEKD_MAX_CONCURRENT_PER_METHOD of the services ('' = none)")  # fmt: skip
    ap.add_argument("--max-concurrent", type=int, default=0,
                    help="ACTIVEKD_MAX_CONCURRENT_RPCS (0 = the services' default)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="ACTIVEKD_THREADS of the services")
    ap.add_argument("--backoff", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slope-target", type=float, default=1.0, metavar="MIB_PER_MIN")
    ap.add_argument("--services", default=",".join(ALL_SERVICES))
    ap.add_argument("--service-env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment of every service (repeatable), e.g. "
                    "ACTIVEKD_MALLOC=glibc")  # fmt: skip
    ap.add_argument("--out", type=Path, default=None, help="JSON path (the PNG goes beside it)")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    soak = args.soak > 0
    extra_env: dict[str, str] = {}
    for item in args.service_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            ap.error(f"--service-env takes NAME=VALUE, got {item!r}")
        extra_env[name] = value
    services = tuple(s for s in args.services.split(",") if s)
    for needed in ("selection", "teacher", "experiment"):
        if needed not in services:
            ap.error(f"--services must include {needed}")
    cfg = LoadConfig(
        clients=args.clients,
        seconds=args.soak if soak else args.seconds,
        pool_rows=args.pool[0],
        pool_classes=args.pool[1],
        budget=args.budget,
        rotate=args.rotate,
        per_method=args.per_method,
        max_concurrent=args.max_concurrent,
        threads=args.threads,
        backoff=args.backoff,
        timeout=args.timeout,
        seed=args.seed,
        warmup=args.warmup,
        services=services,
        soak=soak,
        slope_target=args.slope_target,
        extra_env=extra_env,
    )
    stem = f"load-soak-{cfg.seconds:g}s" if soak else f"load-{cfg.clients}c-{cfg.seconds:g}s"
    out = args.out or ROOT / "bench" / "results" / f"{stem}.json"
    with tempfile.TemporaryDirectory(prefix="akd-load-") as tmp:
        result = run_load(cfg, Path(tmp))
    result["command"] = " ".join(["bench/load.py", *(argv if argv is not None else sys.argv[1:])])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_json(result) + "\n")
    print(markdown(result))
    print(f"results: {out}")
    if not args.no_plot:
        png = out.with_suffix(".png")
        plot(result, png)
        print(f"plot: {png}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
