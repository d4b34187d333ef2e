"""Optimisers and learning-rate schedules, by name, so recipes and `--set` can choose them."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from zupu.errors import SettingError
from zupu.train.threads import parallel


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
    LayerNorm gains stay with AdamW, as in both papers. The torch optimisers keep their state in this
    one's `state` and their groups in its `param_groups`, so schedules and checkpoints see a single optimiser.

    Muon's orthogonalisation is a chain of small matmuls per matrix, which one matmul cannot spread over
    cores; with `workers` > 1 the matrices are dealt to that many Muon parts (balanced by the work of
    their Newton-Schulz iterations) that step side by side, one thread each (AdamW's share is tiny and runs after).
    """

    def __init__(self, muon_groups: list[dict], adamw_groups: list[dict], lr: float, weight_decay: float = 0.1,
                 momentum: float = 0.95, betas: tuple[float, float] = (0.9, 0.95), workers: int = 1):
        muons = [torch.optim.Muon(groups, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                  adjust_lr_fn="match_rms_adamw") for groups in _deal(muon_groups, workers)]
        adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
        self._parts = (*muons, adamw)
        for i, part in enumerate(self._parts):
            for g in part.param_groups:
                g["part"] = i
        super().__init__([g for part in self._parts for g in part.param_groups], {})
        self._bind()

    def _bind(self) -> None:
        """Point the parts at this optimiser's state and groups (again after `load_state_dict`)."""
        for i, part in enumerate(self._parts):
            part.state = self.state
            part.param_groups = [g for g in self.param_groups if g["part"] == i]

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._bind()

    @torch.no_grad()
    def step(self, closure=None):
        *muons, adamw = self._parts
        parallel([muon.step for muon in muons])
        adamw.step()


def _deal(groups: list[dict], n: int) -> list[list[dict]]:
    """Split each parameter group's matrices into `n` groups of about equal Newton-Schulz work (for an a x b
    matrix, m = min(a, b): 4 m^2 max(a, b) + 2 m^3 per iteration), largest first to the least loaded;
    parts left without a matrix are dropped."""
    load, out = [0] * n, [[] for _ in range(n)]
    for group in groups:
        shares = [[] for _ in range(n)]
        for p in sorted(group["params"], key=lambda p: -_ns_cost(p)):
            i = min(range(n), key=load.__getitem__)
            shares[i].append(p)
            load[i] += _ns_cost(p)
        for i, share in enumerate(shares):
            if share:
                out[i].append({**group, "params": share})
    return [groups for groups in out if groups]


def _ns_cost(p: torch.Tensor) -> int:
    m, n = sorted(p.shape[-2:])
    return 4 * m * m * n + 2 * m**3
