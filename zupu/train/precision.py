"""Which float format a recipe multiplies in: bfloat16 where the hardware does it natively, float32 elsewhere.

bfloat16 halves the bytes and, on a CPU with AVX-512 BF16 or AMX, runs matmuls ~2.5x faster than float32
(measured here: 368-407 vs 146-186 GFLOP/s). On a CPU without them (AVX2 only) torch emulates it, 10-100x
slower than float32 (a 2048^2 bf16 matmul: over a minute vs 0.4 s), so "auto" must ask the hardware, not
assume the machine a recipe was tuned on.
"""

from __future__ import annotations

import torch

from zupu.errors import SettingError
from zupu.train.device import current

PRECISIONS = ("auto", "bf16", "fp32")


def native_bf16(device_type: str | None = None) -> bool:
    """Whether `device_type` (by default the run's, `zupu.train.device.current`) multiplies bfloat16 at full
    speed: oneDNN's own test on a CPU (AVX-512 with BF16 or AMX, or AVX-512 cores it runs bf16 kernels on), the
    CUDA capability on a GPU."""
    device_type = device_type or current().type
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve(precision: str, device_type: str | None = None) -> str:
    """"auto" -> "bf16" where the hardware (by default the run's device) has native bfloat16, else "fp32";
    "bf16"/"fp32" as asked."""
    if precision not in PRECISIONS:
        raise SettingError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device_type) else "fp32"
    return precision


def dtype_of(precision: str) -> torch.dtype:
    """The dtype a resolved precision multiplies in."""
    return torch.bfloat16 if precision == "bf16" else torch.float32
