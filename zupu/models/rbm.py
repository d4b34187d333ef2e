"""Restricted Boltzmann machine, trained by contrastive divergence.

The Boltzmann machine (D. Ackley, G. Hinton, T. Sejnowski, "A Learning Algorithm for Boltzmann
Machines", Cognitive Science 9, 1985; Hinton & Sejnowski 1983) is a network of stochastic binary
units with symmetric weights whose states have probability p(s) ~ exp(-E(s)). Learning follows
d log p(v) / dw_ij = <s_i s_j>_data - <s_i s_j>_model, two phases of sampling. Smolensky's
"harmonium" (1986) restricts the wiring to a bipartite graph, visible v and hidden h with no
connections inside a layer; G. Hinton, "Training Products of Experts by Minimizing Contrastive
Divergence" (Neural Computation 14, 2002, https://www.cs.toronto.edu/~hinton/absps/tr00-004.pdf)
made it trainable fast. For binary units:

    energy:        E(v, h) = -b.v - c.h - h^T W v                       (W: hidden x visible)
    conditionals:  p(h_j = 1 | v) = sigmoid(c_j + W_j. v),  p(v_i = 1 | h) = sigmoid(b_i + W_.i^T h)
                   (the bipartite graph makes each layer factorise given the other)
    free energy:   F(v) = -log sum_h exp(-E(v, h)) = -b.v - sum_j softplus(c_j + W_j. v),
                   p(v) = exp(-F(v)) / Z
    gradient:      d log p(v) / dW = p(h|v) v^T - E_model[h v^T]

CD-k replaces the model expectation by the statistics after k steps of block Gibbs sampling
started at the data: h0 ~ p(h|v0), v1 ~ p(v|h0), ..., vk, and uses probabilities rather than
samples wherever that lowers the variance without biasing the expectation: the positive phase
uses p(h|v0), the negative phase p(h|vk) for a sampled vk (Hinton, "A Practical Guide to Training
RBMs", 2010, sec. 3; its mean-field reconstruction vk = p(v|h) would bias p(h|vk), which is not
linear in vk). Persistent CD (T. Tieleman, ICML 2008) keeps the negative chain running across updates
instead of restarting it at the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class RBMConfig:
    n_visible: int = 64
    n_hidden: int = 100
    init_std: float = 0.01  # weights start N(0, 0.01^2), the practical guide's choice


class RBM(nn.Module):
    config_class = RBMConfig

    def __init__(self, config: RBMConfig):
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.randn(config.n_hidden, config.n_visible) * config.init_std)  # W
        self.visible_bias = nn.Parameter(torch.zeros(config.n_visible))  # b
        self.hidden_bias = nn.Parameter(torch.zeros(config.n_hidden))  # c

    def _check(self, v: torch.Tensor) -> None:
        if v.dim() != 2 or v.shape[1] != self.config.n_visible:
            raise ValueError(f"RBM expects visible vectors of shape (N, {self.config.n_visible}), "
                             f"got {tuple(v.shape)}; flatten images and scale them to [0, 1]")

    # -- the energy model ----------------------------------------------------------------------
    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) = -b.v - c.h - h^T W v, one value per row; (N, V), (N, H) -> (N,)."""
        return -(v @ self.visible_bias) - (h @ self.hidden_bias) - ((h @ self.weight) * v).sum(1)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -b.v - sum_j softplus(c_j + W_j. v): the energy with h summed out; (N, V) -> (N,)."""
        return -(v @ self.visible_bias) - F.softplus(v @ self.weight.T + self.hidden_bias).sum(1)

    def p_hidden(self, v: torch.Tensor) -> torch.Tensor:
        """p(h_j = 1 | v) for every hidden unit; (N, V) -> (N, H)."""
        return torch.sigmoid(v @ self.weight.T + self.hidden_bias)

    def p_visible(self, h: torch.Tensor) -> torch.Tensor:
        """p(v_i = 1 | h) for every visible unit; (N, H) -> (N, V)."""
        return torch.sigmoid(h @ self.weight + self.visible_bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """The features a classifier (or the next RBM of a deep belief net) sees: p(h | v)."""
        return self.p_hidden(v)

    def gibbs(self, v: torch.Tensor, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`steps` rounds of block Gibbs sampling v -> h -> v; returns binary visible samples."""
        for _ in range(steps):
            h = torch.bernoulli(self.p_hidden(v), generator=generator)
            v = torch.bernoulli(self.p_visible(h), generator=generator)
        return v

    # -- learning ------------------------------------------------------------------------------
    @torch.no_grad()
    def contrastive_divergence(self, v0: torch.Tensor, k: int = 1, chain: torch.Tensor | None = None,
                               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the CD-k estimate of -d(mean log p(v0))/dparams into .grad (so SGD ascends the likelihood).

        chain: for persistent CD, the hidden states where the negative chain stopped last time (it
        then continues from there instead of from the data). Returns (reconstruction error of v0,
        the chain's new hidden states).
        """
        self._check(v0)
        if k < 1:
            raise ValueError(f"CD-k needs k >= 1 Gibbs steps, got {k}")
        ph0 = self.p_hidden(v0)  # positive phase: probabilities, not samples
        h = torch.bernoulli(ph0, generator=generator) if chain is None else chain
        for _ in range(k):
            v = torch.bernoulli(self.p_visible(h), generator=generator)
            ph = self.p_hidden(v)  # negative phase: probabilities given a sampled v (unbiased)
            h = torch.bernoulli(ph, generator=generator)
        n = len(v0)
        self.weight.grad = -(ph0.T @ v0 - ph.T @ v) / n  # -(<h v>_data - <h v>_model), (H, V)
        self.visible_bias.grad = -(v0 - v).mean(0)
        self.hidden_bias.grad = -(ph0 - ph).mean(0)
        return ((v0 - self.p_visible(ph0)) ** 2).sum(1).mean(), h


PRESETS = {
    "digits": RBMConfig(64, 100),
    "mnist": RBMConfig(784, 256),
    "tiny": RBMConfig(6, 4),
}
