"""How many CPU threads a recipe's maths runs on, restored afterwards (the tour runs recipes in one process),
and a way to run independent pieces of work side by side, one thread each."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

import torch
from threadpoolctl import threadpool_limits

T = TypeVar("T")
_pools: dict[int, ThreadPoolExecutor] = {}


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch and the BLAS that numpy/scikit-learn use on at most `n` threads, then restore the settings.

    Small matrices and step-by-step recurrences gain nothing from a second thread but its
    synchronisation, which on a busy 2-core machine was measured to cost 20-50x (RBM: 33 s vs 0.6 s
    of CPU for 2,000 CD steps; LSTM: 21 s vs 1 s per step); so such recipes ask for one.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, before)))
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)


def parallel(work: Sequence[Callable[[], T]]) -> list[T]:
    """Call each function on a thread of its own (the caller's thread runs the last) and return the results
    in order. For the call's duration torch does its maths on one intra-op thread per calling thread, so n
    pieces keep n cores busy without splitting any one matmul (torch releases the GIL inside its kernels,
    so only the Python glue between them is serial). An exception in a piece is raised after all finish."""
    if len(work) <= 1:
        return [w() for w in work]
    n = len(work) - 1
    if n not in _pools:
        _pools[n] = ThreadPoolExecutor(n, thread_name_prefix="zupu-parallel")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        futures = [_pools[n].submit(w) for w in work[:-1]]
        try:
            last = work[-1]()
        finally:
            wait(futures)
        return [*(f.result() for f in futures), last]
    finally:
        torch.set_num_threads(before)
