"""A long fuzz run: N hostile requests and N/3 raw bodies per RPC against the four services.

The same stack, strategies and checks as tests/fuzz (real Redis, label-map teacher, real gRPC with
the admin token), without stopping at the first finding: every finding is collected with its
request (hypothesis does not shrink here; rerun the method in tests/fuzz to get a minimal one).
Writes a JSON summary (counts by method and status, accepted calls, findings, time).

    .venv/bin/python bench/fuzz.py --examples 2000            # -> bench/results/fuzz.json
    .venv/bin/python bench/fuzz.py --examples 50 --only SelectBatch,UploadPool --seed 7
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.fuzz.conftest import FuzzStack  # noqa: E402
from tests.fuzz.strategies import RpcCase, raw_bodies, rpc_cases  # noqa: E402


def fuzz_case(
    stack: FuzzStack, case: RpcCase, examples: int, raw_examples: int, rng_seed: int
) -> list[str]:
    findings: list[str] = []
    config = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate,),  # no shrinking: collect every finding
    )

    @seed(rng_seed)
    @config
    @given(request=case.requests())
    def typed(request: object) -> None:
        finding = stack.check(case, request)
        if finding:
            findings.append(finding)

    raw_strategy = (
        st.lists(raw_bodies(), min_size=1, max_size=3) if case.client_streaming else raw_bodies()
    )

    @seed(rng_seed)
    @settings(config, max_examples=max(1, raw_examples))
    @given(body=raw_strategy)
    def raw(body: object) -> None:
        finding = stack.check(case, body, raw=True)
        if finding:
            findings.append(finding)

    typed()
    if raw_examples > 0:
        raw()
    return findings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--examples", type=int, default=200, help="typed requests per RPC (200)")
    ap.add_argument("--raw", type=int, default=None, help="raw bodies per RPC (examples/3)")
    ap.add_argument("--seed", type=int, default=13, help="hypothesis seed (13)")
    ap.add_argument("--only", default="", help="comma-separated method names (default: all)")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "fuzz.json", help="JSON summary"
    )
    args = ap.parse_args(argv)
    raw_examples = args.examples // 3 if args.raw is None else args.raw
    only = {m.strip() for m in args.only.split(",") if m.strip()}
    cases = [c for c in rpc_cases() if not only or c.method in only]
    if not cases:
        ap.error(f"--only {args.only!r} names no RPC")
    started = time.perf_counter()
    findings: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="akd-fuzz-") as tmp:
        stack = FuzzStack(Path(tmp)).start()
        try:
            ready = time.perf_counter() - started
            for case in cases:
                t0 = time.perf_counter()
                found = fuzz_case(stack, case, args.examples, raw_examples, args.seed)
                seconds[case.method] = round(time.perf_counter() - t0, 2)
                if found:
                    findings[case.path] = found
                print(
                    f"{case.path}: {stack.stats.calls[case.method]} calls, "
                    f"{stack.stats.accepted[case.method]} accepted, {len(found)} findings, "
                    f"{seconds[case.method]} s",
                    flush=True,
                )
            dead = stack.dead()
        finally:
            stack.stop()
    summary = {
        "examples_per_rpc": args.examples,
        "raw_per_rpc": raw_examples,
        "seed": args.seed,
        "rpcs": len(cases),
        "startup_seconds": round(ready, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "seconds_by_method": seconds,
        "dead_processes": dead,
        **stack.stats.summary(),
        "findings": sum(len(v) for v in findings.values()),
        "findings_by_method": findings,
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{summary['calls']} calls ({summary['accepted']} accepted, {summary['raw_calls']} raw) "
        f"in {summary['total_seconds']} s; {summary['findings']} findings -> {args.out}"
    )
    return 1 if findings or dead else 0


if __name__ == "__main__":
    sys.exit(main())
