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
