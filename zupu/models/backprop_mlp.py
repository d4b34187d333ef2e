"""Back-propagation (1986): hidden units learn because errors flow backwards as deltas.

D. Rumelhart, G. Hinton, R. Williams, "Learning representations by back-propagating errors",
Nature 323 (1986). https://doi.org/10.1038/323533a0

Units are sigmoids, y_j = 1 / (1 + e^-x_j) with x_j = sum_i y_i w_ji + b_j, and the error is
E = 1/2 sum_c sum_j (y_jc - d_jc)^2. The backward pass, written out as in the paper (eqs. 4-7):

    output unit:   delta_j = (y_j - d_j) y_j (1 - y_j)
    hidden unit:   delta_j = y_j (1 - y_j) sum_k delta_k w_kj
    gradient:      dE/dw_ji = delta_j y_i

and the weights move with momentum, dw(t) = -eps dE/dw(t) + alpha dw(t-1) (eq. 9), which is what
`torch.optim.SGD(lr=eps, momentum=alpha)` computes. No autograd is used here; a test checks these
gradients against torch.autograd in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MLPConfig:
    sizes: tuple[int, ...] = (784, 64, 10)  # input, hidden..., output
    init_scale: float = 0.3  # weights start uniform in [-init_scale, init_scale], as in the paper


class MLP(nn.Module):
    config_class = MLPConfig

    def __init__(self, config: MLPConfig):
        super().__init__()
        if len(config.sizes) < 2:
            raise ValueError(f"sizes needs at least an input and an output size, got {config.sizes}")
        self.config = config
        s = config.init_scale
        pairs = list(zip(config.sizes, config.sizes[1:], strict=False))  # (fan_in, fan_out) per layer
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(o, i).uniform_(-s, s)) for i, o in pairs)
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(o).uniform_(-s, s)) for _, o in pairs)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The forward pass, keeping every layer's outputs y (needed by the deltas)."""
        ys = [x]
        for w, b in zip(self.weights, self.biases, strict=True):
            ys.append(torch.sigmoid(ys[-1] @ w.T + b))  # (N, out)
        return ys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activations(x)[-1]

    @torch.no_grad()
    def backprop(self, x: torch.Tensor, d: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """Write dE/dw into .grad by the paper's deltas; return E.

        reduction="sum" is the paper's E summed over cases; "mean" divides by the batch size so one
        learning rate serves any mini-batch size.
        """
        ys = self.activations(x)
        scale = 1.0 if reduction == "sum" else 1.0 / len(x)
        y = ys[-1]
        error = 0.5 * ((y - d) ** 2).sum() * scale
        delta = (y - d) * y * (1 - y) * scale  # output deltas, (N, out)
        for layer in reversed(range(len(self.weights))):
            below = ys[layer]  # (N, in)
            self.weights[layer].grad = delta.T @ below  # dE/dw_ji = sum_cases delta_j y_i
            self.biases[layer].grad = delta.sum(0)
            if layer:
                delta = below * (1 - below) * (delta @ self.weights[layer])  # hidden deltas, (N, in)
        return error


PRESETS = {
    "xor": MLPConfig((2, 2, 1), init_scale=1.0),
    "symmetry": MLPConfig((6, 2, 1), init_scale=0.3),
    "mnist": MLPConfig((784, 128, 10), init_scale=0.05),
    "tiny": MLPConfig((4, 3, 2)),
}
