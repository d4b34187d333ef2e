"""Where a run computes: `zupu train --device auto|cpu|cuda|cuda:N|mps`.

`launch.train` resolves the choice once, moves the model there right after `build` (so a recipe's optimiser
is made over the device's parameters) and makes it the current device for the run (`using`). Shared code asks
`current()` or the model's own device (`of`) instead of assuming the CPU: the Trainer moves each batch there
(`to_device`: pinned host memory and non-blocking copies when it goes to a GPU), `metrics.accuracy` moves its
chunks, and `precision.resolve("auto")` asks the current device whether it has native bfloat16.
Data stays on the host until a batch is taken, so a recipe's datasets and generators need not know the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from zupu.errors import SettingError

CHOICES = "auto, cpu, cuda, cuda:N or mps"
_current = torch.device("cpu")


def resolve(spec: str = "auto") -> torch.device:
    """"auto" -> the first GPU if there is one (CUDA, then Apple's MPS), else the CPU; anything else as asked,
    checked: a device this machine lacks is a SettingError naming it, not a failure deep inside a step."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise SettingError(f"unknown device {spec!r}; choose {CHOICES}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SettingError(f"device {spec!r}: this machine has no CUDA GPU (or torch {torch.__version__} was "
                               "built without CUDA); use --device cpu or auto")
        index = 0 if device.index is None else device.index
        if index >= count:
            raise SettingError(f"device {spec!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise SettingError(f"device {spec!r}: Apple's MPS is not available here; use --device cpu or auto")
        return torch.device("mps")
    raise SettingError(f"device {spec!r} is not one zupu trains on; choose {CHOICES}")


def current() -> torch.device:
    """The device of the run in progress (the CPU outside one)."""
    return _current


@contextmanager
def using(device: torch.device) -> Iterator[torch.device]:
    """Make `device` the current one for the block (and the current CUDA device, so that new CUDA tensors and
    NCCL land on it), then restore the previous one."""
    global _current
    before = _current
    _current = device
    try:
        if device.type == "cuda":
            with torch.cuda.device(device):
                yield device
        else:
            yield device
    finally:
        _current = before


def of(model: nn.Module) -> torch.device:
    """The device a model's parameters (or buffers) live on; the current device for a model without any."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return _current


def to_device(batch: Any, device: torch.device) -> Any:
    """A batch (a tensor, or a tuple/list/dict of them, nested) on `device`. To a GPU the host tensors go through
    pinned memory with non-blocking copies, so the copy overlaps the work already queued on the GPU."""
    if torch.is_tensor(batch):
        if device.type == "cuda" and batch.device.type == "cpu":
            return batch.pin_memory().to(device, non_blocking=True)
        return batch.to(device)  # the tensor itself where it already is
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch  # anything else (a number, text) as it is
