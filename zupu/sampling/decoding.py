"""Decoding a causal language model: pick the next token from logits, and the KV-cache loop that streams tokens.

`sample` picks one token per row with temperature, top-k and top-p (nucleus) filtering; temperature 0 is
greedy. `generate` yields one token per row and step, keeping keys and values in the model's KV caches.
It drives any decoder-only model with this interface (GPT today):

    model.config.n_positions                      the context window
    model.new_caches(max_len) -> caches           one KV cache per layer
    model(ids, attention_mask, position_ids, caches, last_only=True) -> logits (B, 1, V)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from zupu.errors import SettingError
from zupu.nn import pack_linears
from zupu.train.device import of


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row of logits (B, V). temperature 0 -> argmax; top_k keeps the k likeliest;
    top_p keeps the smallest set whose probability reaches p (Holtzman et al. 2019, nucleus sampling)."""
    if temperature < 0 or (top_p is not None and not 0 < top_p <= 1) or (top_k is not None and top_k < 1):
        raise SettingError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 1; got temperature={temperature}, "
                           f"top_p={top_p}, top_k={top_k}")
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, -1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # mass before this token already reaches p; the first stays
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    if generator is not None:
        # drawn where the generator lives: a host generator keeps a seed's samples the same on every device (the
        # draw is a (B, V) copy per token on a GPU, nothing on the CPU)
        return torch.multinomial(probs.to(generator.device), 1, generator=generator)[:, 0].to(probs.device)
    return torch.multinomial(probs, 1)[:, 0]


@torch.no_grad()
def generate(model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, eos_token_id: int | None = None,
             attention_mask: torch.Tensor | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,), `max_new_tokens` times or until every row has emitted
    `eos_token_id` (a finished row repeats it). Rows of different lengths are left-padded, with
    `attention_mask` 0 on the padding. Beyond the context window each token is computed from the last
    `n_positions` tokens without the cache (positions are absolute, so a cache cannot slide).
    `torch.stack(list(generate(model, ...)), 1)` collects the (B, max_new_tokens) result. The linear layers
    multiply by oneDNN-packed copies of their weights from the first call on (`zupu.nn.linear`)."""
    pack_linears(model)
    n_ctx = model.config.n_positions
    # a prompt tokenised on the host joins the model where it is (a stand-in that is no module keeps it as given)
    device = of(model) if isinstance(model, nn.Module) else input_ids.device
    ids = input_ids.to(device)
    mask = None if attention_mask is None else attention_mask.to(device)  # None when no row is padded
    b, t = ids.shape
    if t == 0:
        raise SettingError("generate needs a prompt of at least one token")
    if mask is not None and mask.shape != ids.shape:
        raise SettingError(f"attention_mask {tuple(mask.shape)} does not match input_ids {tuple(ids.shape)}")
    done = torch.zeros(b, dtype=torch.bool, device=ids.device)
    caches = model.new_caches(min(t + max_new_tokens, n_ctx)) if use_cache and t <= n_ctx else None
    step_ids = ids  # the first step feeds the prompt, later steps only the newest token
    for _ in range(max_new_tokens):
        if caches is not None and caches[0].length + step_ids.size(1) <= n_ctx:
            positions = None if mask is None else _positions(mask)[:, -step_ids.size(1):]  # (B, T_step)
            logits = model(step_ids, mask, positions, caches, last_only=True)
        else:
            caches = None
            window = None if mask is None else mask[:, -n_ctx:]
            logits = model(ids[:, -n_ctx:], window, None if window is None else _positions(window), last_only=True)
        token = sample(logits[:, -1], temperature, top_k, top_p, generator)  # (B,)
        if eos_token_id is not None:
            token = token.masked_fill(done, eos_token_id)
            done |= token == eos_token_id
        yield token
        if eos_token_id is not None and bool(done.all()):
            return
        step_ids = token[:, None]  # (B, 1)
        ids = torch.cat([ids, step_ids], 1)
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(step_ids)], 1)


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Left-padded rows count positions from their first real token: (B, T) mask -> (B, T) positions."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
