"""Optimisers and learning-rate schedules, by name, so recipes and `--set` can choose them."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from zupu.errors import SettingError


def make_optimizer(name: str, params: Iterable, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)
    raise SettingError(f"unknown optimizer {name!r}; choose sgd, adam or adamw")


def lr_factor(kind: str, step: int, max_steps: int, warmup: int = 0, min_factor: float = 0.0,
              d_model: int = 512) -> float:
    """Multiplier on the base learning rate at `step` (0-based)."""
    if kind == "noam":  # Vaswani et al. 2017: d^-0.5 * min(s^-0.5, s * warmup^-1.5), s from 1
        s = step + 1
        return d_model**-0.5 * min(s**-0.5, s * max(warmup, 1) ** -1.5)
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    if kind == "cosine":
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "linear":
        return min_factor + (1 - min_factor) * (1 - progress)
    raise SettingError(f"unknown schedule {kind!r}; choose constant, cosine, linear or noam")


def make_schedule(optimizer: torch.optim.Optimizer, kind: str, max_steps: int, warmup: int = 0,
                  min_factor: float = 0.0, d_model: int = 512) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(kind, 0, max_steps, warmup, min_factor, d_model)  # validate the name now, not mid-run
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(kind, step, max_steps, warmup, min_factor, d_model)
    )


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the hidden weight matrices, AdamW on everything else, as one optimiser (one schedule, one
    state dict, one `step`).

    Muon (K. Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) replaces a matrix's momentum
    update by its nearest semi-orthogonal matrix (5 Newton-Schulz iterations), so every direction of the
    update moves at the same rate; J. Liu et al. 2025, "Muon is Scalable for LLM Training",
    https://arxiv.org/abs/2502.16982, scale it by 0.2 sqrt(max(rows, cols)) to match AdamW's update size
    ("match_rms_adamw"), so both parts share one learning rate. Embeddings, the output layer, biases and
    LayerNorm gains stay with AdamW, as in both papers. The two torch optimisers keep their state in this
    one's `state` and their groups in its `param_groups`, so schedules and checkpoints see a single optimiser.
    """

    def __init__(self, muon_groups: list[dict], adamw_groups: list[dict], lr: float, weight_decay: float = 0.1,
                 momentum: float = 0.95, betas: tuple[float, float] = (0.9, 0.95)):
        muon = torch.optim.Muon(muon_groups, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                adjust_lr_fn="match_rms_adamw")
        adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
        for g in muon.param_groups:
            g["muon"] = True
        for g in adamw.param_groups:
            g["muon"] = False
        self._parts = (muon, adamw)
        super().__init__([*muon.param_groups, *adamw.param_groups], {})
        self._bind()

    def _bind(self) -> None:
        """Point the two parts at this optimiser's state and groups (again after `load_state_dict`)."""
        for part, is_muon in zip(self._parts, (True, False), strict=True):
            part.state = self.state
            part.param_groups = [g for g in self.param_groups if g["muon"] is is_muon]

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._bind()

    @torch.no_grad()
    def step(self, closure=None):
        for part in self._parts:
            part.step()
