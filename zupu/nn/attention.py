"""Multi-head scaled dot-product attention (Vaswani et al. 2017), the one every Transformer member shares.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V,   heads concatenated and projected by W_O.

Self-attention projects q, k, v with one fused matmul; cross-attention projects q from the decoder and
k, v from the encoder's memory, whose width may differ from the model's (a text encoder's states read by
an image model). The kernel is `torch.nn.functional.scaled_dot_product_attention`. Masks are boolean,
True where a query may look. `KVCache` keeps past keys and values so that decoding a token costs one row
of attention instead of the whole prefix again.

Grouped-query attention (Ainslie et al. 2023, https://arxiv.org/abs/2305.13245): `n_kv_head` < `n_head`
key/value heads, each shared by n_head / n_kv_head consecutive query heads, which shrinks the KV cache by
that factor. SDPA's `enable_gqa` shares them without copying; on the project's CPU it measured faster
than repeating the key/value heads (`repeat_interleave`) in every case tried (9 query and 3 kv heads of
64: one decoded token over 256 cached positions 0.022 vs 0.057 ms at batch 1, 0.17 vs 0.36 ms at batch 8;
a 256-token prefill 1.22 vs 1.27 ms; training forward + backward at batch 8 x 128 tokens 12.2 vs 15.2 ms).
Rotary positions (`zupu.nn.positions.RotaryEmbedding`) rotate q and k before the cache stores k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zupu.errors import SettingError
from zupu.nn.linear import PackedLinear
from zupu.nn.positions import apply_rotary


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


def decoder_mask(attention_mask: torch.Tensor, past: int, t: int) -> torch.Tensor:
    """A decoder's padding mask for T new queries after `past` cached positions: attention_mask (B, past + T)
    -> boolean (B, 1, T, past + T). A query sees the real keys, and always itself, so a padding query never has
    an empty softmax row (the causal part is added by the attention layer)."""
    b = attention_mask.size(0)
    if attention_mask.shape != (b, past + t):
        raise SettingError(f"attention_mask {tuple(attention_mask.shape)} must cover the {past} cached and "
                           f"{t} new positions of each of {b} rows: ({b}, {past + t})")
    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, past + T)
    positions = torch.arange(past + t, device=attention_mask.device)
    return keys | (positions == positions[past:, None])  # (B, 1, T, past + T)


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
    """Multi-head attention. `cross=True` takes keys and values from `memory` (encoder-decoder attention),
    `d_memory` wide (default d_model). `n_kv_head` < n_head makes it grouped-query attention; the fused
    projection `qkv` then stacks n_head query heads and n_kv_head key and value heads (unequal parts).
    `proj_bias` sets the output projection's bias apart from q/k/v's (default: `bias`)."""

    def __init__(self, d_model: int, n_head: int, bias: bool = True, dropout: float = 0.0, cross: bool = False,
                 window: int | None = None, n_kv_head: int | None = None, d_memory: int | None = None,
                 proj_bias: bool | None = None):
        super().__init__()
        n_kv_head = n_kv_head or n_head
        if d_model % n_head:
            raise SettingError(f"d_model {d_model} is not divisible by n_head {n_head}")
        if n_head % n_kv_head:
            raise SettingError(f"n_head {n_head} is not a multiple of n_kv_head {n_kv_head}: each key/value head "
                               "must serve the same number of query heads")
        self.n_head, self.n_kv_head, self.cross, self.window, self.dropout = n_head, n_kv_head, cross, window, dropout
        self.head_dim = d_model // n_head
        d_kv = n_kv_head * self.head_dim
        if cross:
            self.q = PackedLinear(d_model, d_model, bias=bias)
            self.kv = PackedLinear(d_memory or d_model, 2 * d_kv, bias=bias)
        else:
            self.qkv = PackedLinear(d_model, d_model + 2 * d_kv, bias=bias)
        self.proj = PackedLinear(d_model, d_model, bias=bias if proj_bias is None else proj_bias)

    def heads(self, x: torch.Tensor, n: int = 1, n_head: int | None = None) -> torch.Tensor:
        """(B, T, n * nh * hs) -> (n, B, nh, T, hs): n projections (q, k, v side by side) split into heads at once."""
        b, t, _ = x.shape
        return x.view(b, t, n, n_head or self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)

    def project(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Self-attention's q (B, nh, T, hs) and stacked k, v (2, B, n_kv_head, T, hs) from one matmul, q and k
        rotated by `rope` (cos, sin) when it is given."""
        qkv = self.qkv(x)
        nq, nkv = self.n_head, self.n_kv_head
        if rope is not None:  # q and k heads side by side, rotated in one pass (decoding is bound by op count)
            b, t, _ = x.shape
            h = qkv.view(b, t, nq + 2 * nkv, self.head_dim).transpose(1, 2)  # (B, q + k + v heads, T, hs)
            qk = apply_rotary(h[:, :nq + nkv], *rope)
            return qk[:, :nq], torch.stack([qk[:, nq:], h[:, nq + nkv:]])
        if nkv == nq:  # one view for all three
            qkv = self.heads(qkv, 3)  # (3, B, nh, T, hs)
            return qkv[0], qkv[1:]
        q, kv = qkv.split([nq * self.head_dim, 2 * nkv * self.head_dim], -1)
        return self.heads(q)[0], self.heads(kv, 2, nkv)

    def weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention probabilities softmax(Q K^T / sqrt(d_k)), (B, nh, T, T), for looking at (the
        fused kernel in `forward` never forms them)."""
        q, (k, _) = self.project(x)
        k = k.repeat_interleave(self.n_head // self.n_kv_head, 1)  # (B, nh, T, hs)
        scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5  # (B, nh, T, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                memory: torch.Tensor | None = None, cache: KVCache | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, T, d_model) -> (B, T, d_model). `rope` is (cos, sin) for these T positions, from
        `RotaryEmbedding`; it rotates self-attention's q and k."""
        b, t, c = x.shape
        if self.cross:
            q = self.heads(self.q(x))[0]
            if cache is not None and cache.length:  # the encoder's keys/values never change while decoding
                k, v = cache.k, cache.v
            else:
                kv = self.heads(self.kv(memory), 2, self.n_kv_head)
                k, v = cache.append(kv) if cache is not None else kv
        else:
            q, kv = self.project(x, rope)  # (B, nh, T, hs), (2, B, n_kv_head, T, hs)
            past = cache.length if cache is not None else 0
            k, v = kv if cache is None else cache.append(kv)
            # one new query after a cached prefix sees every key, so it needs no causal mask
            if causal and ((past and t > 1) or mask is not None or self.window is not None):
                keep = causal_mask(t, k.size(2), past, self.window, x.device)
                mask = keep if mask is None else mask & keep
                causal = False
        # with no other mask, the fused causal kernel (is_causal) skips building a (T, T) mask
        kw = dict(attn_mask=mask, is_causal=causal and t > 1 and not self.cross,
                  dropout_p=self.dropout if self.training else 0.0)
        if self.n_kv_head != self.n_head:
            kw["enable_gqa"] = True
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # torch's CPU attention kernel is slower in bfloat16 than in float32 (at 64 positions x 32 dims:
            # backward 6x, forward 1.4x), so a bfloat16 (autocast) model attends in float32
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kw).to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, **kw)
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, T, C): heads side by side
        return self.proj(y)
