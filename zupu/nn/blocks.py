"""The Transformer layer: attention and MLP sublayers, each wrapped in a residual and a norm, with the norm,
the MLP and the attention as parameters (timm's `Block(norm_layer=, mlp_layer=)`), so one block serves
every member:

    post-norm (the 2017 paper, GPT-1, BERT):  x = Norm(x + Dropout(Sublayer(x)))
    pre-norm (GPT-2, ViT, Llama, ...):        x = x + Dropout(Sublayer(Norm(x)))    (trains without a long warm-up)

A decoder layer (`cross_attn`) has a third sublayer between them that attends to the encoder's output.
GPT-2 is Block(attn=MultiHeadAttention, mlp=FeedForward, norm=nn.LayerNorm); Llama is
Block(attn=MultiHeadAttention(n_kv_head=...) with rotary positions, mlp=SwiGLU, norm=RMSNorm).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from zupu.nn.attention import KVCache


class Block(nn.Module):
    """`attn` and `mlp` are modules (`attn(x, mask, causal, cache=, rope=)`, `mlp(x)`); `norm(d_model)` makes
    each norm. The norms are ln1 (attention), ln_cross (cross-attention) and ln2 (MLP) whatever their kind."""

    def __init__(self, d_model: int, attn: nn.Module, mlp: nn.Module,
                 norm: Callable[[int], nn.Module] = nn.LayerNorm, pre_ln: bool = True,
                 cross_attn: nn.Module | None = None, dropout: float = 0.0):
        super().__init__()
        self.pre_ln = pre_ln
        self.attn = attn
        self.ln1 = norm(d_model)
        self.cross_attn = cross_attn
        self.ln_cross = norm(d_model) if cross_attn is not None else None
        self.mlp = mlp
        self.ln2 = norm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, cross_cache: KVCache | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        # written out for both layouts rather than through a generic sublayer(f) helper: no closure per call
        if self.pre_ln:
            x = x + self.drop(self.attn(self.ln1(x), mask, causal, cache=cache, rope=rope))
            if self.cross_attn is not None:
                x = x + self.drop(self.cross_attn(self.ln_cross(x), memory_mask, memory=memory, cache=cross_cache))
            return x + self.drop(self.mlp(self.ln2(x)))
        x = self.ln1(x + self.drop(self.attn(x, mask, causal, cache=cache, rope=rope)))
        if self.cross_attn is not None:
            x = self.ln_cross(x + self.drop(self.cross_attn(x, memory_mask, memory=memory, cache=cross_cache)))
        return self.ln2(x + self.drop(self.mlp(x)))
