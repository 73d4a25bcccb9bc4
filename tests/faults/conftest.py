"""One chaos stack (Redis with AOF + the four services, small Fashion-MNIST pools with precomputed
teacher pools) for the chaos and Redis-restart tests, and its clean reference run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.chaos import ChaosStack, RunResult, run_clean, start_stack


@pytest.fixture(scope="package")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    stack = start_stack(tmp_path_factory.mktemp("chaos"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="package")
def clean_run(chaos_stack: ChaosStack) -> RunResult:
    """The uninterrupted run every interrupted one must equal (spec seed 7, 2 rounds)."""
    return run_clean(chaos_stack, "clean")
