"""The Transformer layer: attention and feed-forward sublayers, each wrapped in a residual and a LayerNorm.

Post-LN (the 2017 paper, GPT-1, BERT): x = LN(x + Sublayer(x)).
Pre-LN (GPT-2, ViT, most models since): x = x + Sublayer(LN(x)), which trains without a long warm-up.
A decoder layer (`cross=True`) has a third sublayer that attends to the encoder's output.
"""

from __future__ import annotations

import torch
from torch import nn

from zupu.nn.attention import KVCache, MultiHeadAttention
from zupu.nn.mlp import FeedForward


class TransformerBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int, d_ff: int, act: str = "gelu", pre_ln: bool = True,
                 cross: bool = False, dropout: float = 0.0, attn_dropout: float = 0.0, eps: float = 1e-5,
                 bias: bool = True, window: int | None = None):
        super().__init__()
        self.pre_ln = pre_ln
        self.attn = MultiHeadAttention(d_model, n_head, bias, attn_dropout, window=window)
        self.ln1 = nn.LayerNorm(d_model, eps=eps)
        self.cross_attn = MultiHeadAttention(d_model, n_head, bias, attn_dropout, cross=True) if cross else None
        self.ln_cross = nn.LayerNorm(d_model, eps=eps) if cross else None
        self.mlp = FeedForward(d_model, d_ff, act, bias, dropout)
        self.ln2 = nn.LayerNorm(d_model, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, cross_cache: KVCache | None = None) -> torch.Tensor:
        # written out for both layouts rather than through a generic sublayer(f) helper: no closure per call
        if self.pre_ln:
            x = x + self.drop(self.attn(self.ln1(x), mask, causal, cache=cache))
            if self.cross_attn is not None:
                x = x + self.drop(self.cross_attn(self.ln_cross(x), memory_mask, memory=memory, cache=cross_cache))
            return x + self.mlp(self.ln2(x))  # FeedForward applies its own dropout
        x = self.ln1(x + self.drop(self.attn(x, mask, causal, cache=cache)))
        if self.cross_attn is not None:
            x = self.ln_cross(x + self.drop(self.cross_attn(x, memory_mask, memory=memory, cache=cross_cache)))
        return self.ln2(x + self.mlp(x))
