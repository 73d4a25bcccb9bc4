"""Thread limits for one selection call (faiss OpenMP, torch intra-op, BLAS)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager


@contextmanager
def limit_threads(threads: int | None) -> Iterator[None]:
    """Caps faiss, torch and BLAS threads at ``threads`` for the duration of the block.

    ``None`` leaves every library at its default. The limits are process-wide while the block
    runs (the libraries only offer global settings) and are restored afterwards.
    """
    if not threads:
        yield
        return
    import faiss
    import torch

    prev_faiss = faiss.omp_get_max_threads()
    prev_torch = torch.get_num_threads()
    with ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=threads))
        except ImportError:  # pragma: no cover - threadpoolctl is optional
            pass
        faiss.omp_set_num_threads(threads)
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(prev_faiss)
            torch.set_num_threads(prev_torch)


@contextmanager
def quiet_torch(active: bool = True) -> Iterator[None]:
    """Runs the block with torch at one intra-op thread (when ``active``), then restores it.

    For work whose only torch use is small casts: a parallel torch op leaves its OpenMP workers
    spinning, and they then compete with BLAS and faiss threads for the same cores.
    """
    if not active:
        yield
        return
    import torch

    prev = torch.get_num_threads()
    if prev == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
