"""Position-wise feed-forward networks, applied to each position alone.

    FFN(x)    = W_2 act(W_1 x + b_1) + b_2                      (Vaswani et al. 2017, eq. 2)
    SwiGLU(x) = W_2 (Swish(x W) * (x V))                        (N. Shazeer, "GLU Variants Improve Transformer",
                                                                 2020, https://arxiv.org/abs/2002.05202, eq. 6)

SwiGLU (Llama, SmolLM2, Mistral, ...) gates one projection by the Swish (SiLU) of another; its hidden width
is usually 2/3 of FFN's so that the three matrices hold as many weights as FFN's two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zupu.errors import UnknownName
from zupu.nn.linear import PackedLinear


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x sigmoid(1.702 x), the sigmoid approximation of GELU (Hendrycks & Gimpel 2016, section 2) that CLIP uses."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact erf form (BERT, ViT)
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's tanh approximation
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": quick_gelu,
    "silu": F.silu,
    "swish": F.silu,  # MarianMT's name for it
    "tanh": torch.tanh,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise UnknownName("activation", name, list(ACTIVATIONS))
    return ACTIVATIONS[name]


class FeedForward(nn.Module):
    """FFN(x) = proj(act(fc(x))); the block around it applies dropout to its output."""

    def __init__(self, d_model: int, d_ff: int, act: str = "gelu", bias: bool = True):
        super().__init__()
        self.fc = PackedLinear(d_model, d_ff, bias=bias)
        self.act = activation(act)
        self.proj = PackedLinear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class SwiGLU(nn.Module):
    """proj(act(gate(x)) * up(x)), act = SiLU (SwiGLU) or another (`act="gelu"`: GEGLU). The gate and up
    projections are one matmul, `fc` (2 * d_ff rows: gate's, then up's), as Llama's gate_proj and up_proj stacked."""

    def __init__(self, d_model: int, d_ff: int, act: str = "silu", bias: bool = False):
        super().__init__()
        self.fc = PackedLinear(d_model, 2 * d_ff, bias=bias)
        self.act = activation(act)
        self.proj = PackedLinear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.fc(x).chunk(2, -1)  # (B, T, d_ff) each
        return self.proj(self.act(gate) * up)
