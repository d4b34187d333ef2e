"""AlexNet's ingredients, at the scale of a 28x28 grey image on a CPU.

A. Krizhevsky, I. Sutskever, G. Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS 2012. https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks

The paper's network is five convolutions and three fully connected layers over 224x224 colour
images on two GPUs. What made it work, and what this file keeps, are its ingredients (sections 3-4):

- ReLU, f(x) = max(0, x) (sec. 3.1): non-saturating, so it trains "several times faster" than tanh.
- Local response normalisation across neighbouring channels (sec. 3.3) in the first two stages,
  with the paper's k = 2, n = 5, alpha = 1e-4, beta = 0.75 (applied after the pooling rather than
  before it, the order of the BVLC CaffeNet reference model, because on a CPU it costs more than
  the convolutions when run on the unpooled maps):

      b[i] = a[i] / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a[j]^2)^beta

- Overlapping max-pooling (sec. 3.4): 3x3 windows at stride 2 (z = 3 > s = 2).
- Dropout with p = 0.5 in the first two fully connected layers (sec. 4.2): their units are dropped,
  not the flattened convolution features (dropping those too, as some re-implementations do, slowed
  learning badly here, where the last convolution has only 128 outputs).
- Data augmentation and SGD with momentum 0.9 and weight decay 5e-4 (sec. 4.1, 5) live in the
  recipe (zupu/recipes/alexnet.py), not the model.

Shape for the default 28x28 input: conv 5x5 -> 28, pool -> 13; conv 3x3 -> 13, pool -> 6;
conv 3x3 -> 6; flatten; two ReLU+dropout hidden layers; linear to the classes. The paper pools after
its first, second and fifth convolutions and feeds a 6x6 map to the classifier; a third pool here
would leave 2x2 (`pooled=3`: 90.1% on Fashion-MNIST against 91.4% with the 6x6 map, same 12 epochs),
so only the first two stages pool. `activation`, `lrn`, `pool_kernel` and `dropout` are switches for
the ablations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AlexNetConfig:
    image_size: int = 28
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 32)  # conv widths; the first conv is 5x5, the others 3x3
    hidden: int = 256  # width of the two fully connected hidden layers (4096 in the paper)
    num_classes: int = 10
    activation: str = "relu"  # "relu" (the paper) or "tanh" (the ablation)
    lrn: bool = True  # local response normalisation after the first two convolutions
    lrn_size: int = 5  # n
    lrn_k: float = 2.0
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    pool_kernel: int = 3  # 3 at stride 2 overlaps (the paper); 2 at stride 2 does not
    pool_stride: int = 2
    pooled: int = 2  # how many leading stages end in max-pooling (the rest keep their map size)
    dropout: float = 0.5


def local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The paper's LRN across channels, b = a / (k + alpha * sum_window a^2)^beta.

    The window sum is one matrix product with a (C, C) band of ones, which on a CPU is several times
    faster than `F.local_response_norm`'s pooling over a padded copy (tests check the two agree; note
    torch's version divides alpha by `size`).
    """
    c = torch.arange(x.shape[1], device=x.device)
    band = ((c[:, None] - c[None, :]).abs() <= size // 2).to(x.dtype)  # (C, C): channels j near i
    window = torch.einsum("nchw,cd->ndhw", x * x, band)  # (N, C, H, W): sum of a_j^2 over the window
    return x / (k + alpha * window).pow(beta)


class AlexNet(nn.Module):
    config_class = AlexNetConfig

    def __init__(self, config: AlexNetConfig):
        super().__init__()
        c = config
        if c.activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be 'relu' or 'tanh', got {c.activation!r}")
        if not c.channels:
            raise ValueError("channels needs at least one convolution width")
        if not 0.0 <= c.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {c.dropout}")
        self.config = c
        self.act = torch.relu if c.activation == "relu" else torch.tanh
        widths = (c.in_channels, *c.channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(i, o, 5 if n == 0 else 3, padding=2 if n == 0 else 1)  # "same" padding
            for n, (i, o) in enumerate(zip(widths, widths[1:], strict=False)))
        side = c.image_size
        if not 0 <= c.pooled <= len(c.channels):
            raise ValueError(f"pooled must be between 0 and {len(c.channels)} (the stages), got {c.pooled}")
        for _ in range(c.pooled):
            side = (side - c.pool_kernel) // c.pool_stride + 1  # each conv keeps the size, each pool shrinks it
        if side < 1:
            raise ValueError(f"{c.pooled} poolings leave nothing of a {c.image_size}x{c.image_size} image")
        self.fc1 = nn.Linear(c.channels[-1] * side * side, c.hidden)
        self.fc2 = nn.Linear(c.hidden, c.hidden)
        self.head = nn.Linear(c.hidden, c.num_classes)
        self.drop = nn.Dropout(c.dropout)
        for m in self.modules():  # He init suits ReLU; tanh keeps torch's default (it saturates with He)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and c.activation == "relu":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> logits (N, classes)."""
        c = self.config
        for n, conv in enumerate(self.convs):
            x = self.act(conv(x))
            if n < c.pooled:
                x = F.max_pool2d(x, c.pool_kernel, c.pool_stride)  # (N, channels[n], H', W')
            if c.lrn and n < 2:  # pooled first (CaffeNet's order): normalising 13x13 maps, not 28x28, is 4.6x cheaper
                x = local_response_norm(x, c.lrn_size, c.lrn_alpha, c.lrn_beta, c.lrn_k)
        x = x.flatten(1)  # (N, channels[-1] * side * side)
        x = self.drop(self.act(self.fc1(x)))  # dropout on the first two fully connected layers' units
        x = self.drop(self.act(self.fc2(x)))
        return self.head(x)


PRESETS = {
    "fashion": AlexNetConfig(),
    "tiny": AlexNetConfig(image_size=12, channels=(4, 6), hidden=8),
}
