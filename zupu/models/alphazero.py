"""The policy-value network of AlphaGo Zero and AlphaZero: one residual tower, two heads.

D. Silver, J. Schrittwieser, K. Simonyan et al., "Mastering the game of Go without human knowledge", Nature 550,
2017, https://doi.org/10.1038/nature24270 (AlphaGo Zero); D. Silver, T. Hubert et al., "A general reinforcement
learning algorithm that masters chess, shogi, and Go through self-play", Science 362, 2018 (AlphaZero). AlphaGo
(Silver et al., Nature 529, 2016, https://doi.org/10.1038/nature16961) had separate policy and value networks;
AlphaGo Zero joined them:

    (p, v) = f_theta(s),    p: a distribution over moves,  v in [-1, 1]: the expected outcome for the mover

trained on self-play positions towards the search's probabilities pi and the game's outcome z,

    l = (z - v)^2 - pi^T log p + c ||theta||^2.

The input is the board from the view of the player to move: plane 0 holds their stones, plane 1 the
opponent's (so one network plays both sides). Tower: a 3x3 convolution, then residual blocks of two 3x3
convolutions; policy head: a 1x1 convolution to 2 planes, then a linear layer to the moves' logits; value head:
a 1x1 convolution to 1 plane, a hidden layer, then tanh. Differences from the paper, which boards of 3x3 to 7x6
allow: tens of channels rather than 256, a few blocks rather than 19-39, and no batch normalisation (a position's
outputs then do not depend on the batch it is evaluated in, and the shallow tower trains without it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PolicyValueConfig:
    rows: int = 3
    columns: int = 3
    in_channels: int = 2  # the mover's stones, the opponent's (Go: and a plane saying which colour moves)
    num_actions: int = 9  # a move per cell (Connect-4: per column; Go: per cell, then pass)
    channels: int = 32
    blocks: int = 2
    value_hidden: int = 32


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class PolicyValueNet(nn.Module):
    config_class = PolicyValueConfig

    def __init__(self, config: PolicyValueConfig):
        super().__init__()
        self.config = config
        c, cells = config.channels, config.rows * config.columns
        self.stem = nn.Conv2d(config.in_channels, c, 3, padding=1)
        self.tower = nn.Sequential(*(ResidualBlock(c) for _ in range(config.blocks)))
        self.policy_conv = nn.Conv2d(c, 2, 1)
        self.policy_fc = nn.Linear(2 * cells, config.num_actions)
        self.value_conv = nn.Conv2d(c, 1, 1)
        self.value_fc1 = nn.Linear(cells, config.value_hidden)
        self.value_fc2 = nn.Linear(config.value_hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, in_channels, rows, columns) -> (policy logits (N, num_actions), value (N,))."""
        h = self.tower(F.relu(self.stem(x)))  # (N, C, rows, columns)
        logits = self.policy_fc(F.relu(self.policy_conv(h)).flatten(1))  # (N, 2 * cells) -> (N, num_actions)
        v = F.relu(self.value_fc1(F.relu(self.value_conv(h)).flatten(1)))  # (N, cells) -> (N, value_hidden)
        return logits, torch.tanh(self.value_fc2(v)).squeeze(-1)


PRESETS = {
    "tiny": PolicyValueConfig(channels=8, blocks=1, value_hidden=8),
    "tic-tac-toe": PolicyValueConfig(),
    # what the recipes of the same names train
    "connect-four": PolicyValueConfig(rows=6, columns=7, num_actions=7, blocks=3),
    "go-5x5": PolicyValueConfig(rows=5, columns=5, in_channels=3, num_actions=26),
}
