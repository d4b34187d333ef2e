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


class Muon(torch.optim.Muon):
    """torch's Muon with the Newton-Schulz iterations of all same-shaped matrices run as one batched product.

    The update is torch's, term for term (the tests compare them); what changes is speed: a small model's
    matrices (a GPT block's four, 128 x 128..512) are too small for one product to keep two cores busy,
    so one at a time they leave a core idle, while a batch of them splits across cores.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if "momentum_buffer" not in self.state[p]:  # not setdefault: its default would be allocated every step
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_lerp_(bufs, grads, 1 - group["momentum"])
            updates = torch._foreach_lerp(grads, bufs, group["momentum"]) if group["nesterov"] else bufs
            updates = orthogonalise(updates, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                    getattr(torch, group.get("ns_dtype", "bfloat16")))
            torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            for p, u in zip(params, updates, strict=True):
                p.add_(u, alpha=-group["lr"] * _lr_ratio(group["adjust_lr_fn"], *p.shape))
        return loss


def _lr_ratio(adjust: str | None, rows: int, cols: int) -> float:
    """torch.optim.Muon's per-matrix learning-rate factor (its `adjust_lr_fn`)."""
    if adjust is None or adjust == "original":
        return math.sqrt(max(1, rows / cols))
    return 0.2 * math.sqrt(max(rows, cols)) if adjust == "match_rms_adamw" else 1.0


def orthogonalise(matrices: list[torch.Tensor], coefficients: tuple[float, float, float], steps: int,
                  eps: float, dtype: torch.dtype = torch.bfloat16) -> list[torch.Tensor]:
    """torch.optim.Muon's Newton-Schulz iteration (on the wide orientation of each matrix, from the matrix
    over its norm), batched over matrices of one shape; the results in `dtype`, in order. torch runs it in
    bfloat16, which a CPU without native bfloat16 emulates 10-100x slower: there float32 is the fast choice."""
    a, b, c = coefficients
    wide = [m.mT if m.size(0) > m.size(1) else m for m in matrices]
    out: list[torch.Tensor | None] = [None] * len(matrices)
    for shape in dict.fromkeys(w.shape for w in wide):
        idx = [i for i, w in enumerate(wide) if w.shape == shape]
        x = torch.stack([wide[i] for i in idx]).to(dtype)
        x.div_(torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True).clamp(min=eps))
        for _ in range(steps):
            gram = x @ x.mT
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        for i, m in zip(idx, x, strict=True):
            out[i] = m.mT if matrices[i].size(0) > matrices[i].size(1) else m
    return out


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the hidden weight matrices, AdamW on everything else, as one optimiser (one schedule, one
    state dict, one `step`).

    Muon (K. Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) replaces a matrix's momentum
    update by its nearest semi-orthogonal matrix (5 Newton-Schulz iterations), so every direction of the
    update moves at the same rate; J. Liu et al. 2025, "Muon is Scalable for LLM Training",
    https://arxiv.org/abs/2502.16982, scale it by 0.2 sqrt(max(rows, cols)) to match AdamW's update size
    ("match_rms_adamw"), so both parts share one learning rate. Embeddings, the output layer, biases and
    LayerNorm gains stay with AdamW, as in both papers. The two parts (the batched `Muon` above, torch's fused
    AdamW) keep their state in this one's `state` and their groups in its `param_groups`, so schedules and
    checkpoints see a single optimiser.
    """

    def __init__(self, muon_groups: list[dict], adamw_groups: list[dict], lr: float, weight_decay: float = 0.1,
                 momentum: float = 0.95, betas: tuple[float, float] = (0.9, 0.95),
                 ns_dtype: torch.dtype = torch.bfloat16):
        muon = Muon(muon_groups, lr=lr, weight_decay=weight_decay, momentum=momentum, adjust_lr_fn="match_rms_adamw")
        adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
        for g in muon.param_groups:
            # Newton-Schulz in bfloat16 (torch's) or float32, named so the group stays plain data for checkpoints
            g["muon"], g["ns_dtype"] = True, str(ns_dtype).removeprefix("torch.")
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
