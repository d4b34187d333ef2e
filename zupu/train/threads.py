"""How many CPU threads a recipe's maths runs on, restored afterwards (the tour runs recipes in one process)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits


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
