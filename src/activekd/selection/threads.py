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
