"""Llama recipe: the real SmolLM2-135M-Instruct (open weights, read from its GGUF) reads Shakespeare.

No training happens here: what Llama brought to the family tree is open weights that anyone can run. The
recipe loads them through the weights registry and measures held-out bits per character on the last 10%
of tiny Shakespeare (the split the GPT recipes validate on), so the number sits beside theirs whatever
the tokenizer: bits/char = sum of token losses (nats) / characters / ln 2. The text is cut into
non-overlapping windows of `context` tokens, each scored from its own start (no carried-over context).

The figure is the context window at work: the mean loss at each position of the window falls as the
model has more of the text to go on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from zupu import data
from zupu.checkpoint import from_pretrained
from zupu.models.llama import Llama
from zupu.recipe import Milestone, Recipe
from zupu.train.device import of
from zupu.train.plots import save


@dataclass
class Settings:
    weights: str = "smollm2"  # a weights-registry name or a .gguf path
    eval_chars: int = 0  # characters of the held-out split scored (its start); 0: the whole split (111,540)
    context: int = 512  # tokens per window
    batch_size: int = 4


@cache
def tokenizer(weights: str):
    from zupu.hf import gguf
    from zupu.weights import registry

    return gguf.tokenizer(registry.fetch(weights) if weights in registry.WEIGHTS else Path(weights))


def held_out(eval_chars: int) -> str:
    text = data.load("tinyshakespeare")
    val = text[int(0.9 * len(text)):]  # nanoGPT's split, by characters
    return val[:eval_chars] if eval_chars else val


@torch.no_grad()
def token_losses(model: Llama, ids: list[int], context: int, batch_size: int) -> torch.Tensor:
    """Next-token losses (nats), (windows, context - 1), over non-overlapping windows of `context` tokens
    (a last partial window is dropped: every position is scored with the same amount of context)."""
    n = len(ids) // context
    windows = torch.tensor(ids[: n * context]).view(n, context)  # (N, context)
    out = []
    for batch in windows.to(of(model)).split(batch_size):
        logits = model(batch[:, :-1])  # (b, context - 1, V)
        out.append(F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="none")
                   .view(len(batch), -1))
    return torch.cat(out)


class SmolLM2Shakespeare(Recipe):
    name = "smollm2-shakespeare"
    summary = "the real SmolLM2-135M-Instruct weights (GGUF, Q4_1) score held-out tiny Shakespeare in bits/char"
    Settings = Settings
    # measured 1.651 on the whole split (111,540 characters, 35,770 tokens scored)
    milestone = Milestone("val_bpc", 1.75, higher_is_better=False,
                          paper="nanoGPT's character-level GPT trained on this text: val loss 1.47 nats = 2.12 "
                                "bits/char")
    quick = {"eval_chars": 10000}
    # measured 1.517 (the first 10,000 characters; no training, so seeds 0-2 give the same number): 39.5 s of CPU
    # at 1 thread on a machine under load 25, of which the forwards (about 60%) halve on 2 idle cores
    quick_milestone = Milestone("val_bpc", 1.6, higher_is_better=False)
    quick_seconds = 30.0
    tiny = {"eval_chars": 3000, "context": 128}

    def build(self, s: Settings) -> Llama:
        return from_pretrained(s.weights)

    def train(self, model: Llama, s: Settings, run) -> dict:
        tokenizer(s.weights).save(run.out)  # with its chat template: `zupu chat RUN` talks to the run
        return self.evaluate(model, s)

    def evaluate(self, model: Llama, s: Settings) -> dict:
        text = held_out(s.eval_chars)
        tok = tokenizer(s.weights)
        ids = tok.encode(text)
        losses = token_losses(model.eval(), ids, s.context, s.batch_size)
        # the characters the scored tokens spell: every window's tokens but its first, which nothing predicts
        firsts = ids[: losses.size(0) * s.context: s.context]
        scored = len(tok.decode(ids[: losses.size(0) * s.context])) - sum(len(tok.decode([i])) for i in firsts)
        return {"val_bpc": round(losses.sum().item() / scored / math.log(2), 4),
                "val_loss_per_token": round(losses.mean().item(), 4), "val_tokens": losses.numel(),
                "chars_per_token": round(len(text) / len(ids), 3)}

    def example(self, s: Settings) -> tuple:
        return (torch.tensor([tokenizer(s.weights).encode(held_out(200))[:16]]),)

    def figures(self, model: Llama, s: Settings, run) -> None:
        losses = token_losses(model, tokenizer(s.weights).encode(held_out(s.eval_chars)), s.context, s.batch_size)
        per_position = losses.mean(0)  # (context - 1,): position p predicts token p + 1 from p + 1 tokens
        edges = sorted({int(e) for e in torch.logspace(0, math.log10(s.context), 16)} | {s.context})
        bins = list(zip(edges[:-1], edges[1:], strict=True))  # log-spaced: a few windows are noisy position by position
        seen = [(a + b) / 2 for a, b in bins]
        means = [per_position[a - 1:b - 1].mean().item() for a, b in bins]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(seen, means, "o-")
        ax.set_xscale("log")
        ax.set_xlabel("tokens of context the prediction sees")
        ax.set_ylabel("mean loss (nats/token)")
        ax.set_title(f"SmolLM2-135M on held-out Shakespeare ({losses.size(0)} windows)")
        save(fig, run.path("loss_by_position.png"))


RECIPES = [SmolLM2Shakespeare()]
