"""bench/load.py in miniature: 4 clients for 3 s on a 2000x10 pool against the real services.

The long runs (64 clients for 60 s, the 10-minute soak) are ``bench/load.py`` and
``bench/load.py --soak 600``; this checks the same code end to end: every method is called and
answers, nothing but OK or the deliberate RESOURCE_EXHAUSTED comes back, the percentiles and the
RSS samples are there, and the report serializes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench import load

CFG = load.LoadConfig(
    clients=4,
    seconds=3.0,
    pool_rows=2000,
    pool_classes=10,
    rotate=5,  # several experiment ids per client even in 3 s
    per_method="SelectBatch=2,Predict=2",  # limits on: a refusal is allowed, never required
    services=("selection", "teacher", "experiment"),  # the trainer gets no calls
    warmup=1.0,
    seed=0,
)


def test_load_smoke(tmp_path: Path) -> None:
    result = load.run_load(CFG, tmp_path / "stack", log=lambda _msg: None)

    assert result["problems"] == [] and result["unexpected_codes"] == {}, result["problems"]
    assert set(result["totals"]["codes"]) <= load.ALLOWED_CODES
    assert all(result["alive"].values()), result["alive"]
    from activekd.server.allocator import find_jemalloc

    want = "jemalloc" if find_jemalloc() else "glibc"  # the default, when the library is there
    assert result["allocators"] == {name: want for name in CFG.services}, result["allocators"]
    assert result["ok"] is True
    for name in load.METHODS:
        stats = result["methods"][name]
        assert stats["codes"].get("OK", 0) > 0, (name, stats)
        lat = stats["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], (name, lat)
        assert all(math.isfinite(v) for v in lat.values())
    assert sum(result["selection_variants"].values()) == result["methods"]["SelectBatch"][
        "codes"
    ].get("OK", 0)
    assert {v.split("/")[1] for v in result["selection_variants"]} == {
        "experiment",
        "no-experiment",
    }
    assert result["service_env"]["ACTIVEKD_MAX_CONCURRENT_PER_METHOD"] == "SelectBatch=2,Predict=2"
    # RSS: every service, Redis and the load generator sampled each second during the load
    summary = result["rss"]["summary"]
    assert set(summary) == {"selection", "teacher", "experiment", "redis", "loadgen"}
    for name, rss in summary.items():
        assert rss["samples"] >= 3 and rss["start_mib"] > 0 and rss["max_mib"] > 0, (name, rss)
        assert rss["slope_mib_per_min"] is not None and math.isfinite(rss["slope_mib_per_min"])
    columns = result["rss"]["samples"]
    assert len(columns["t"]) == len(columns["selection"]) >= 3
    assert columns["t"] == sorted(columns["t"]) and columns["t"][0] < 0 < columns["t"][-1]
    assert result["machine"]["nproc"] >= 1
    assert result["cpu_seconds"]["selection"] > 0

    assert json.loads(json.dumps(result))["totals"] == result["totals"]  # the JSON report
    text = load.markdown(result)  # (the PNG is left to the bench runs: matplotlib costs ~3 s)
    assert "| SelectBatch |" in text and "| teacher |" in text
