"""Deep belief net: RBMs stacked greedily, layer by layer, then fine-tuned as one network.

G. Hinton, S. Osindero, Y. Teh, "A fast learning algorithm for deep belief nets", Neural
Computation 18 (2006), https://doi.org/10.1162/neco.2006.18.7.1527; fine-tuning by back-propagation
as in G. Hinton, R. Salakhutdinov, "Reducing the Dimensionality of Data with Neural Networks",
Science 313 (2006), and Y. Bengio et al., "Greedy Layer-Wise Training of Deep Networks" (NIPS 2006).

Greedy layer-wise pre-training (no labels): train RBM 1 on the data x by contrastive divergence;
then treat its hidden probabilities h1 = p(h | x) = sigmoid(W1 x + c1) as the data for RBM 2, and so
on. Each added layer improves a variational lower bound on log p(x) (Hinton et al. 2006, sec. 4).
Fine-tuning (with labels): the recognition weights define a sigmoid network
h_l = sigmoid(W_l h_(l-1) + c_l), topped by a softmax layer, trained end to end by back-propagating
cross-entropy. The paper's own fine-tuning (the contrastive "up-down" wake-sleep variant) is
replaced here by back-propagation, which is how pre-trained DBNs were used as classifiers since.

The RBM layers are the `rbm` member's model (`zupu.models.rbm.RBM`), reused rather than rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zupu.models.rbm import RBM, RBMConfig


@dataclass
class DBNConfig:
    sizes: tuple[int, ...] = (784, 500, 500)  # visible, then each RBM's hidden layer
    n_classes: int = 10
    init_std: float = 0.01  # the RBMs' initial weight scale (before pre-training)


class DBN(nn.Module):
    config_class = DBNConfig

    def __init__(self, config: DBNConfig):
        super().__init__()
        if len(config.sizes) < 2:
            raise ValueError(f"sizes needs a visible and at least one hidden size, got {config.sizes}")
        self.config = config
        pairs = zip(config.sizes, config.sizes[1:], strict=False)  # (visible, hidden) of each RBM
        self.rbms = nn.ModuleList(RBM(RBMConfig(v, h, config.init_std)) for v, h in pairs)
        self.classifier = nn.Linear(config.sizes[-1], config.n_classes)

    def features(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """The data seen by RBM `depth` (default: the top features): x pushed up through p(h | v)."""
        h = x
        for rbm in self.rbms[:depth]:
            h = rbm.p_hidden(h)  # (N, hidden of that RBM)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of the fine-tuned network; (N, sizes[0]) -> (N, n_classes)."""
        return self.classifier(self.features(x))


PRESETS = {
    "mnist": DBNConfig((784, 500, 500)),
    "tiny": DBNConfig((6, 4, 3), n_classes=2),
}
