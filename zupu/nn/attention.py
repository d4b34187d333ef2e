"""Multi-head scaled dot-product attention (Vaswani et al. 2017), the one every Transformer member shares.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V,   heads concatenated and projected by W_O.

Self-attention projects q, k, v with one fused matmul; cross-attention projects q from the decoder and
k, v from the encoder's memory. The kernel is `torch.nn.functional.scaled_dot_product_attention`. Masks
are boolean, True where a query may look. `KVCache` keeps past keys and values so that decoding a token
costs one row of attention instead of the whole prefix again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zupu.errors import SettingError
from zupu.nn.linear import PackedLinear


class KVCache:
    """One attention layer's past keys and values, preallocated to `max_len` so decoding writes in place.

    Keys and values live in one (2, B, nh, max_len, hs) tensor so that a step stores both with one copy."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.length = 0
        self.kv: torch.Tensor | None = None

    @property
    def k(self) -> torch.Tensor:
        return self.kv[0, :, :, :self.length]

    @property
    def v(self) -> torch.Tensor:
        return self.kv[1, :, :, :self.length]

    def append(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys and values (2, B, nh, T, hs); return every key and value so far."""
        end = self.length + kv.size(3)
        if end > self.max_len:
            raise SettingError(f"the context window is full: {end} positions > max_len {self.max_len}; "
                               "generate fewer tokens or crop the prompt")
        if self.kv is None:
            self.kv = kv.new_empty((*kv.shape[:3], self.max_len, kv.size(4)))
        self.kv[:, :, :, self.length:end] = kv
        self.length = end
        return self.k, self.v

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search reorders hypotheses after each step)."""
        if self.kv is not None:
            self.kv = self.kv.index_select(1, index)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) with 1 for real tokens, 0 for padding -> boolean (B, 1, 1, S) that broadcasts over heads and queries."""
    return attention_mask.bool()[:, None, None, :]


def causal_mask(t: int, s: int, past: int = 0, window: int | None = None, device=None) -> torch.Tensor:
    """(t, s) boolean: query i (absolute position past + i) sees keys j <= past + i, and only the last
    `window` of them when a window is set (GPT-3's locally banded sparse attention)."""
    i = torch.arange(past, past + t, device=device)[:, None]
    j = torch.arange(s, device=device)[None, :]
    keep = j <= i
    if window is not None:
        keep &= j > i - window
    return keep


class MultiHeadAttention(nn.Module):
    """Multi-head attention. `cross=True` takes keys and values from `memory` (encoder-decoder attention)."""

    def __init__(self, d_model: int, n_head: int, bias: bool = True, dropout: float = 0.0, cross: bool = False,
                 window: int | None = None):
        super().__init__()
        if d_model % n_head:
            raise SettingError(f"d_model {d_model} is not divisible by n_head {n_head}")
        self.n_head, self.cross, self.window, self.dropout = n_head, cross, window, dropout
        if cross:
            self.q = PackedLinear(d_model, d_model, bias=bias)
            self.kv = PackedLinear(d_model, 2 * d_model, bias=bias)
        else:
            self.qkv = PackedLinear(d_model, 3 * d_model, bias=bias)
        self.proj = PackedLinear(d_model, d_model, bias=bias)

    def heads(self, x: torch.Tensor, n: int = 1) -> torch.Tensor:
        """(B, T, n * C) -> (n, B, nh, T, hs): n projections (q, k, v side by side) split into heads at once."""
        b, t, nc = x.shape
        return x.view(b, t, n, self.n_head, nc // (n * self.n_head)).permute(2, 0, 3, 1, 4)

    def weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention probabilities softmax(Q K^T / sqrt(d_k)), (B, nh, T, T), for looking at (the
        fused kernel in `forward` never forms them)."""
        q, k, _ = self.heads(self.qkv(x), 3)
        scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5  # (B, nh, T, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                memory: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        b, t, c = x.shape
        if self.cross:
            q = self.heads(self.q(x))[0]
            if cache is not None and cache.length:  # the encoder's keys/values never change while decoding
                k, v = cache.k, cache.v
            else:
                kv = self.heads(self.kv(memory), 2)
                k, v = cache.append(kv) if cache is not None else kv
        else:
            qkv = self.heads(self.qkv(x), 3)  # (3, B, nh, T, hs)
            past = cache.length if cache is not None else 0
            if cache is None:
                q, k, v = qkv
            else:
                q, (k, v) = qkv[0], cache.append(qkv[1:])
            # one new query after a cached prefix sees every key, so it needs no causal mask
            if causal and ((past and t > 1) or mask is not None or self.window is not None):
                keep = causal_mask(t, k.size(2), past, self.window, x.device)
                mask = keep if mask is None else mask & keep
                causal = False
        # with no other mask, the fused causal kernel (is_causal) skips building a (T, T) mask
        kw = dict(attn_mask=mask, is_causal=causal and t > 1 and not self.cross,
                  dropout_p=self.dropout if self.training else 0.0)
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # torch's CPU attention kernel is slower in bfloat16 than in float32 (at 64 positions x 32 dims:
            # backward 6x, forward 1.4x), so a bfloat16 (autocast) model attends in float32
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kw).to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, **kw)
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, T, C): heads side by side
        return self.proj(y)
