"""How a recipe uses the CPU: how many cores it may and can use now, how many threads its maths runs on,
restored afterwards (the tour runs recipes in one process), a way to run independent pieces of work side by
side, one thread each, and malloc settings that keep a training loop's freed memory for its next step."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

import torch
from threadpoolctl import threadpool_limits

T = TypeVar("T")
_pools: dict[int, ThreadPoolExecutor] = {}


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity: a `taskset` or a container's cpuset), not the machine's."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call (macOS, Windows): every CPU
        return list(range(os.cpu_count() or 1))


def busy_cpus(cpus: list[int], seconds: float = 0.2) -> float:
    """How many of `cpus` other work kept busy over the next `seconds` (this process sleeps meanwhile), from
    the kernel's per-CPU time counters; 0.0 where there are none to read (not Linux)."""

    def sample() -> dict[int, tuple[int, int]]:
        counts = {}
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *ticks = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    values = [int(t) for t in ticks]
                    counts[int(name[3:])] = (sum(values), values[3] + values[4])  # (all, idle + iowait)
        return counts

    try:
        before = sample()
        time.sleep(seconds)
        after = sample()
    except OSError:
        return 0.0
    busy = 0.0
    for cpu, (total, idle) in after.items():
        elapsed = total - before[cpu][0]
        if elapsed > 0:
            busy += 1 - (idle - before[cpu][1]) / elapsed
    return busy


def free_cores(usable: int, busy: float) -> int:
    """Threads worth running on `usable` cores of which `busy` are taken by other work: the cores left at
    least three-quarters idle, and at least one. A thread that shares its core with another process is
    descheduled mid-matmul while its partners wait at the join (a 20x collapse was measured with two
    threads beside one busy core), so a taken core is left to whoever holds it."""
    return max(1, min(usable, int(usable - busy + 0.25)))


def auto_threads() -> int:
    """`free_cores` now, for this process's usable CPUs, capped by torch's own count (OMP_NUM_THREADS)."""
    cpus = usable_cpus()
    return min(free_cores(len(cpus), busy_cpus(cpus)), torch.get_num_threads())


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


@functools.cache
def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for reuse instead of returning it to the kernel (process-wide).

    A training step frees and allocates the same megabytes of activations every step. By default glibc
    serves large blocks with fresh pages and trims the heap's free top, so every step faults its pages back
    in, zeroed: ~6,000 page faults and ~10% of a shakespeare-char step at batch 32 here, ~30 faults with
    these settings. The cost is that the process keeps its peak heap. A no-op where libc is not glibc.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD at glibc's maximum: blocks up to 32 MiB come from the heap
    mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: hand back the heap's free top only beyond 1 GiB
