"""``/predict`` latency of the Label Studio ML backend (#14 target: p95 < 1 s for 100 tasks).

Starts what a deployment has, on loopback: a real Label Studio 1.23.2 (its own venv,
``scripts/label_studio_venv.sh``), Redis and the four services, an experiment on a Fashion-MNIST
pool advanced to its first AWAITING_LABELS by the backend's worker, and ``activekd-annotation``
as a process. Then it POSTs pages of ``--page`` tasks (Label Studio's task JSON: id, data with
the image as a PNG data URL, item id, round, rank) with basic auth, ``--requests`` times, one at
a time (Label Studio sends one page per call), and reports p50/p95/p99/max and the body size::

    .venv/bin/python bench/annotation_predict.py            # -> bench/results/annotation-predict.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the Label Studio harness lives in tests/annotation


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=int, default=2000, help="pool images")
    ap.add_argument("--page", type=int, default=100, help="tasks per /predict call")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/annotation-predict.json")
    args = ap.parse_args(argv)

    import tempfile

    import numpy as np

    from activekd.annotation.classes import labeling_config
    from activekd.annotation.labelstudio import LabelStudioProject
    from activekd.annotation.tasks import image_data_url
    from activekd.client import ExperimentClient, SelectionClient
    from activekd.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
    from activekd.defaults import DEFAULT_STRATEGY
    from activekd.orchestration.local_services import LocalServices
    from activekd.state.round_records import RoundState
    from activekd.v1 import experiment_pb2
    from tests.annotation.label_studio_server import (
        AnnotationBackend,
        LabelStudioServer,
        ensure_venv,
    )

    secret, exp_id = "bench-shared-secret-0123456789", "predict-bench"
    env = {"ACTIVEKD_TEACHER_BACKEND": "label-map", "ACTIVEKD_TEACHER_IMAGE_SIZE": "64",
           "ACTIVEKD_THREADS": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
    x, y = load_fashion_mnist("train")
    ids = [f"p{i}" for i in range(args.pool)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, LabelStudioServer(ensure_venv()) as ls:
        stack = LocalServices(Path(tmp) / "stack", env=env).start()
        try:
            with SelectionClient(stack.target("selection")) as sel:
                sel.upload_pool("bench/pool", item_ids=ids,
                                arrays={"images": x[: args.pool], "labels": y[: args.pool]})  # fmt: skip
            spec = experiment_pb2.ExperimentSpec(
                pool_id="bench/pool", dataset="fmnist-bench",
                class_names=list(FASHION_MNIST_CLASSES), strategy=DEFAULT_STRATEGY,
                initial_per_class=1, budget_per_round=10, num_rounds=1, seed=3,
            )  # fmt: skip
            spec.student_config.update({"steps": 20})
            project = LabelStudioProject.create(
                ls.url, ls.api_key, "predict bench", labeling_config(FASHION_MNIST_CLASSES)
            )
            with ExperimentClient(stack.target("experiment"), timeout=600) as client:
                client.create(spec, experiment_id=exp_id)
                backend = AnnotationBackend(
                    stack, ls, project.project_id, Path(tmp) / "backend.log", exp_id, secret
                ).start()
                try:
                    deadline = time.monotonic() + 600
                    while client.get(exp_id).state is not RoundState.AWAITING_LABELS:
                        if time.monotonic() > deadline:
                            raise SystemExit("the experiment never reached AWAITING_LABELS")
                        time.sleep(0.5)
                    setup_s = time.perf_counter() - t0
                    rng = np.random.default_rng(0)
                    picks = list(client.get(exp_id).rounds[0].selected_item_ids)
                    times, sizes = [], []
                    for _ in range(args.requests):
                        rows = rng.choice(args.pool, size=args.page, replace=False)
                        tasks = [
                            {"id": int(r) + 1, "data": {"image": image_data_url(x[r]),
                             "item_id": ids[r], "round": 0,
                             "rank": picks.index(ids[r]) if ids[r] in picks else None}}
                            for r in rows
                        ]  # fmt: skip
                        body = {"tasks": tasks, "project": f"{project.project_id}.0"}
                        sizes.append(len(json.dumps(body)))
                        start = time.perf_counter()
                        code, reply = backend.post("/predict", body)
                        times.append(time.perf_counter() - start)
                        if code != 200 or len(reply["results"]) != args.page:
                            raise SystemExit(f"/predict answered {code}: {str(reply)[:300]}")
                finally:
                    backend.stop()
        finally:
            stack.stop()
    ms = sorted(1000 * t for t in times)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))]

    result = {
        "command": "bench/annotation_predict.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"nproc": __import__("os").cpu_count(), "python": platform.python_version()},
        "pool": args.pool, "page": args.page, "requests": args.requests,
        "body_kib_mean": statistics.fmean(sizes) / 1024,
        "setup_seconds": round(setup_s, 1),
        "ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99), "max": ms[-1],
               "mean": statistics.fmean(ms)},
        "target_p95_ms": 1000, "ok": pct(95) < 1000,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
