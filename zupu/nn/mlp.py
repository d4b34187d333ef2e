"""The position-wise feed-forward network: FFN(x) = W_2 act(W_1 x + b_1) + b_2 (Vaswani et al. 2017, eq. 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zupu.errors import UnknownName
from zupu.nn.linear import PackedLinear

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact erf form (BERT, ViT)
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's tanh approximation
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,  # MarianMT's name for it
    "tanh": torch.tanh,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise UnknownName("activation", name, list(ACTIVATIONS))
    return ACTIVATIONS[name]


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, act: str = "gelu", bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.fc = PackedLinear(d_model, d_ff, bias=bias)
        self.act = activation(act)
        self.proj = PackedLinear(d_ff, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))
