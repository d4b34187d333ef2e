"""A Linear layer that, when asked to and no gradient is needed, multiplies by a oneDNN-packed copy of its weight.

y = x W^T + b, as `nn.Linear` (same parameters, same state-dict keys). Decoding a few rows at a time
spends most of its time in these matmuls, and on the project's CPU (AMD EPYC, AVX-512) the default
float32 GEMM (MKL) runs the (8 x 768) @ (768 x 3072) shapes of GPT-2 decoding at about half the rate of
oneDNN on a weight reordered once into oneDNN's blocked layout (`benchmarks/history/RESULTS-gpt-generate.md`).
That is the kernel `torch.compile` uses for CPU inference with frozen weights; here it is taken directly.

The packed copy is memory the size of the weight again, so it is opt-in (`pack_linears(model)`, which
`GPT.generate` calls), and it is rebuilt whenever the weight has changed since it was packed (its
version counter, bumped by every in-place update such as an optimiser step or `load_state_dict`).
Training (autograd on) always takes the plain `F.linear` path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zupu.train.precision import native_bf16

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Linear):
    packed = False  # switched on per layer by `pack_linears`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.packed and _ONEDNN and x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            return torch.ops.mkldnn._linear_pointwise(x, self._packed_weight(), self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def _packed_weight(self) -> torch.Tensor:
        w = self.weight
        key = (w.data_ptr(), w._version)
        if getattr(self, "_packed_key", None) != key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach())
            self._packed_key = key
        return self._packed

    def __getstate__(self) -> dict:  # copies and pickles repack: oneDNN's layout has no storage to copy
        return {k: v for k, v in self.__dict__.items() if k not in ("_packed", "_packed_key")}


def pack_linears(model: nn.Module) -> None:
    """Let every PackedLinear in `model` use a packed weight in gradient-free forwards from now on."""
    for m in model.modules():
        if isinstance(m, PackedLinear):
            m.packed = True


class Int4Linear(nn.Module):
    """y = x W^T with W stored as groupwise 4-bit integers: W = sum over planes p of (q_p - 8) * s_p + z_p, one
    scale s and zero z per row and group of `group_size` inputs (llama.cpp's Q4_1 is one plane, its Q8_0 two:
    the high and low nibbles of each int8, the high one scaled by 16).

    Decoding is memory-bound; 4 bits and a bfloat16 (scale, zero) pair per 32 weights read 5.3x fewer bytes
    than float32. The kernel is PyTorch's CPU int4 GEMM (`_weight_int4pack_mm_for_cpu`, the gpt-fast/torchao
    path); it is vectorised only for bfloat16 activations (float32 ones take a scalar path 5-25x slower than
    `F.linear`), so the inputs are rounded to bfloat16 for the product and the result returned in x's dtype.

    The kernel dequantises the weight again for every 4 rows and plane, so its time grows with rows x planes:
    at SmolLM2's output layer (576 -> 49152, Q8_0: two planes; one thread, AVX-512 BF16) it takes 3.2 / 5.8 /
    11.5 / 22.9 ms for 1 / 4 / 8 / 16 rows, where a dense bfloat16 GEMM on oneDNN's packed weight takes 4.6-4.8 ms
    for 1 or 8 rows. So from `DENSE_ROWS` rows x planes on (a prompt; batch-8 decoding's output layer) the
    product runs through a dense copy of W, made by the kernel itself on the first such call (x = I gives W^T,
    each weight rounded to bfloat16 as the kernel returns it) and kept: bfloat16 where the CPU multiplies it
    natively (`zupu.train.precision.native_bf16`), float32 elsewhere. It costs the weight's dense size in
    memory, once such an input has come."""

    DENSE_ROWS = 16

    def __init__(self, planes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], group_size: int = 32):
        """planes: (q (out, in) integers in [0, 15], s (out, in / group_size), z (same)) each."""
        super().__init__()
        self.out_features, self.in_features = planes[0][0].shape
        self.group_size = group_size
        for i, (q, s, z) in enumerate(planes):
            self.register_buffer(f"q{i}", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.int().contiguous(), 1))
            self.register_buffer(f"sz{i}", torch.stack([s.t(), z.t()], -1).to(torch.bfloat16).contiguous())
        self.n_planes = len(planes)
        # W (out, in), made on the first input of DENSE_ROWS rows x planes; not a buffer: Module.to cannot cast or
        # move oneDNN's packed layout (and the int4 kernel runs on the CPU only), and checkpoints leave it out
        self.dense: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        if x2.size(0) * self.n_planes >= self.DENSE_ROWS:
            y = self.dense_mm(x2)
        else:
            xb = x2.to(torch.bfloat16)
            y = self.int4_mm(xb, 0).to(x.dtype)
            for i in range(1, self.n_planes):
                y += self.int4_mm(xb, i)  # each plane's bfloat16 product summed in x's dtype
        return y.reshape(*x.shape[:-1], self.out_features)

    def int4_mm(self, xb: torch.Tensor, plane: int) -> torch.Tensor:
        """(M, in) bfloat16 -> (M, out) bfloat16 through one plane."""
        return torch.ops.aten._weight_int4pack_mm_for_cpu(xb, getattr(self, f"q{plane}"), self.group_size,
                                                          getattr(self, f"sz{plane}"))

    def dense_mm(self, x2: torch.Tensor) -> torch.Tensor:
        """(M, in) -> (M, out) through the dense copy of W, dequantised by the kernel on the first call and kept,
        in oneDNN's blocked layout where oneDNN runs (as `PackedLinear`'s; 1.9x faster than `F.linear` for 8
        rows of the output layer, the same numbers)."""
        if self.dense is None:
            eye = torch.eye(self.in_features, dtype=torch.bfloat16, device=self.q0.device)
            w = sum(self.int4_mm(eye, i).float() for i in range(self.n_planes)).t()  # (out, in)
            w = w.to(torch.bfloat16 if native_bf16(w.device.type) else torch.float32).contiguous()
            self.dense = torch.ops.mkldnn._reorder_linear_weight(w) if _ONEDNN else w
        xd = x2.to(self.dense.dtype)
        y = (torch.ops.mkldnn._linear_pointwise(xd, self.dense, None, "none", [], "") if _ONEDNN
             else F.linear(xd, self.dense))
        return y.to(x2.dtype)

    def _apply(self, fn, recurse: bool = True):
        # the kernel reads (scale, zero) in bfloat16 only: Module.to(dtype), .float() and .half() may move them to
        # another device but never cast them (a round trip through float16 would also lose small scales)
        kept = {n: b for n, b in self._buffers.items() if n.startswith("sz")}
        super()._apply(fn, recurse)
        for n, b in kept.items():
            self._buffers[n] = b.to(self._buffers[n].device)
        return self

    def __getstate__(self) -> dict:
        return {**self.__dict__, "dense": None}  # copies and pickles remake it, as PackedLinear's

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, planes={self.n_planes}, " \
               f"group_size={self.group_size}"
