"""Beam search for any left-to-right decoder, given a step function and a way to reorder its state.

Each sentence keeps k hypotheses; at every step each is extended by every token, and the k best sums of
log-probabilities survive. A finished hypothesis (it produced eos) may only continue with padding at no
cost, so its score stays put while the others grow. The answer is the hypothesis with the best
length-normalised log-probability (sum / number of tokens including eos).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def beam_search(next_logprobs: Callable[[torch.Tensor], torch.Tensor], reorder: Callable[[torch.Tensor], None],
                batch: int, k: int, bos: int, eos: int, pad: int, max_new_tokens: int,
                device=None) -> list[list[int]]:
    """`next_logprobs(y)` takes the last tokens (batch*k,) of every hypothesis, advances the decoder's own
    state, and returns log-probabilities (batch*k, V); `reorder(rows)` makes that state follow the
    surviving hypotheses (row i of the new state is old row rows[i]). The decoder state starts with each
    sentence repeated k times (rows b*k .. b*k+k-1). Returns `batch` token lists without bos and eos."""
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis at the start, so the first step yields k distinct ones
    tokens = torch.full((batch * k, 0), pad, dtype=torch.long, device=device)
    lengths = torch.zeros(batch, k, device=device)
    finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
    y = torch.full((batch * k,), bos, dtype=torch.long, device=device)
    offsets = torch.arange(batch, device=device)[:, None] * k  # (batch, 1)
    for _ in range(max_new_tokens):
        logp = next_logprobs(y)  # (batch*k, V)
        V = logp.shape[-1]
        logp = logp.view(batch, k, V)
        frozen = torch.full_like(logp, float("-inf"))
        frozen[..., pad] = 0.0
        logp = torch.where(finished[..., None], frozen, logp)
        scores, flat = (scores[..., None] + logp).view(batch, k * V).topk(k, dim=1)  # (batch, k)
        beam, y = flat // V, flat % V  # which hypothesis each survivor extends, and with what token
        rows = (offsets + beam).view(-1)  # (batch*k,)
        reorder(rows)
        tokens = torch.cat([tokens[rows], y.view(-1, 1)], dim=1)
        was_finished = finished.gather(1, beam)
        lengths = lengths.gather(1, beam) + (~was_finished).float()
        finished = was_finished | (y == eos)
        y = y.view(-1)
        if finished.all():
            break
    best = (scores / lengths.clamp(min=1)).argmax(1)  # (batch,)
    chosen = tokens.view(batch, k, -1)[torch.arange(batch, device=device), best].tolist()
    return [row[: row.index(eos)] if eos in row else row for row in chosen]
