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


def pack_linears(model: nn.Module) -> None:
    """Let every PackedLinear in `model` use a packed weight in gradient-free forwards from now on."""
    for m in model.modules():
        if isinstance(m, PackedLinear):
            m.packed = True
