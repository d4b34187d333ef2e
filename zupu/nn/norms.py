"""Normalisation layers. LayerNorm is torch's `nn.LayerNorm`; RMSNorm drops LayerNorm's centring and bias:

    RMSNorm(x) = x / sqrt(mean_i(x_i^2) + eps) * g

(B. Zhang, R. Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019, https://arxiv.org/abs/1910.07467,
eq. 4; T5, Llama and most decoders since).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:  # torch's one kernel, the same numbers as below
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # the mean square is taken in float32 at least (as Llama does): bfloat16's 8-bit mantissa loses it
        h = x.to(torch.promote_types(x.dtype, torch.float32))
        h = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"
