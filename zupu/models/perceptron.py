"""Rosenblatt's perceptron (1957/58): threshold units whose weights learn from their mistakes.

F. Rosenblatt, "The Perceptron: A Probabilistic Model for Information Storage and Organization in
the Brain", Psychological Review 65 (1958). https://doi.org/10.1037/h0042519

One output unit (binary): o = [w.x + b >= 0]; on a mistake, w <- w + eta (t - o) x, b likewise.
Nothing changes when the answer is right. With C output units (the article's digit recogniser:
196 inputs x 10 units = 1,960 weights + 10 biases) the prediction is argmax_c w_c.x + b_c and a
mistake moves the true class's weights towards x and the predicted class's away from it
(the multi-class rule, Duda & Hart 1973; Collins 2002). Softmax over the scores turns them into
the probabilities the article shows; it does not change the argmax, so it plays no part in learning.

The weights reported are, by default, the average of the weights after every example (the
averaged perceptron of Freund & Schapire 1999, "Large Margin Classification Using the Perceptron
Algorithm"): the rule is unchanged, but the average does not swing with the last few mistakes.

Novikoff (1962): on data separable with margin gamma inside a ball of radius R, the rule makes at
most (R / gamma)^2 mistakes, whatever the order of the examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PerceptronConfig:
    n_inputs: int = 196
    n_outputs: int = 10  # 1 = a single binary unit with targets 0/1


class Perceptron(nn.Module):
    config_class = PerceptronConfig

    def __init__(self, config: PerceptronConfig):
        super().__init__()
        self.config = config
        # Rosenblatt started from zero (or random) weights; zero makes the mistake bound exact.
        self.weight = nn.Parameter(torch.zeros(config.n_outputs, config.n_inputs))
        self.bias = nn.Parameter(torch.zeros(config.n_outputs))
        # Running sums for the averaged perceptron; buffers, so a resumed run continues the average.
        self.register_buffer("weight_sum", torch.zeros(config.n_outputs, config.n_inputs))
        self.register_buffer("bias_sum", torch.zeros(config.n_outputs))
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, n_inputs) -> scores (N, n_outputs)."""
        return F.linear(x, self.weight, self.bias)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        s = self(x)
        return (s[:, 0] >= 0).long() if self.config.n_outputs == 1 else s.argmax(-1)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), -1)

    @torch.no_grad()
    def rule(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Write the perceptron update, negated, into .grad (SGD with lr=eta applies it); return #mistakes.

        For a batch, every example is judged with the weights at the start of the batch; with
        batch size 1 this is Rosenblatt's online rule exactly.
        """
        self.weight_sum += self.weight * len(x)
        self.bias_sum += self.bias * len(x)
        self.seen += len(x)
        pred = self.predict(x)
        wrong = (pred != y).float()  # (N,) updates only on mistakes
        if not wrong.any():  # nothing to learn: no gradient, so the optimiser leaves the weights alone
            self.weight.grad = self.bias.grad = None
            return wrong.sum()
        if self.config.n_outputs == 1:
            direction = ((y - pred).float() * wrong)[:, None]  # t - o in {-1, 0, +1}; (N, 1)
        else:
            k = self.config.n_outputs
            direction = (F.one_hot(y, k) - F.one_hot(pred, k)).float() * wrong[:, None]  # (N, C)
        self.weight.grad = -(direction.T @ x)
        self.bias.grad = -direction.sum(0)
        return wrong.sum()

    def averaged(self) -> Perceptron:
        """A copy whose weights are the average over all examples seen so far."""
        avg = Perceptron(self.config).to(self.weight.device)
        if self.seen > 0:
            avg.weight.data = self.weight_sum / self.seen
            avg.bias.data = self.bias_sum / self.seen
        return avg

    @torch.no_grad()
    def use_average(self) -> None:
        """Make the averaged weights the model's weights (done once, at the end of training)."""
        avg = self.averaged()
        self.weight.copy_(avg.weight)
        self.bias.copy_(avg.bias)
        self.weight_sum.zero_()
        self.bias_sum.zero_()
        self.seen.zero_()


PRESETS = {
    "digits-14x14": PerceptronConfig(196, 10),
    "mark1-20x20": PerceptronConfig(400, 10),
    "gate": PerceptronConfig(2, 1),
    "tiny": PerceptronConfig(4, 3),
}
