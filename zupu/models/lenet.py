"""LeNet: shared-weight convolutions and subsampling, 1989 and 1998.

Y. LeCun, B. Boser, J. Denker, D. Henderson, R. Howard, W. Hubbard, L. Jackel, "Backpropagation
Applied to Handwritten Zip Code Recognition", Neural Computation 1(4), 1989.
https://doi.org/10.1162/neco.1989.1.4.541

Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 86(11), 1998. http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf

The idea both share: a hidden unit sees only a small window of the layer below (a local receptive
field), and all units of one feature map use the same weights at every position (weight sharing),
so a feature detector learnt in one place works everywhere:

    y[m, i, j] = f( sum_{c in inputs(m)} sum_{u,v} w[m, c, u, v] x[c, s*i + u, s*j + v] + b )

with the squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (1998 appendix A; the 1989
net uses the same scaled tanh), chosen so f(+-1) = +-1 and targets +-1 sit where f is steepest.

LeNet1989 (the zip-code net): 16x16 input in [-1, 1]; H1 = 12 maps 8x8 (5x5 kernels, stride 2);
H2 = 12 maps 4x4 (5x5 kernels, stride 2), each map seeing 8 of the 12 H1 maps; H3 = 30 units;
10 outputs; every unit has its own bias (weights are shared, biases are not); trained on mean
squared error against +-1 targets.

LeNet5 (1998): 32x32 input; C1 = 6 maps 28x28 (5x5); S2 = 2x2 subsampling: the four inputs are
summed, times a trainable coefficient, plus a trainable bias, then squashed; C3 = 16 maps 10x10
whose connections to S2 follow Table I (below); S4 = subsampling to 5x5; C5 = 120 maps 1x1 (5x5,
a full connection here); F6 = 84 units; output = Euclidean RBF units

    y_i = sum_j (x_j - w_ij)^2                                                      (eq. 7)

with fixed +-1 parameter vectors w_i, trained with the paper's discriminative MAP criterion

    E = y_D + log(e^-j + sum_i e^-y_i)                                              (eq. 9)

i.e. cross-entropy over the logits -y_i plus a "rubbish" class with constant logit -j. The paper
drew the +-1 codes as 7x12 bitmaps of the characters and notes random +-1 codes would also do; we
use random codes from a fixed seed (buffers, saved with the weights). `output="linear"` swaps the
RBF layer for an ordinary linear layer + cross-entropy, which is what most modern re-implementations
use. The recipe defaults to the linear head: the paper trained the RBF head with a second-order
method (stochastic diagonal Levenberg-Marquardt); under plain SGD the 84-dimensional distances start
near 84 for every class, far below the rubbish logit, and our first SGD run saturated F6.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Table I of LeCun et al. (1998): which S2 maps (rows 0-5) feed each C3 map (columns 0-15).
# Maps 0-5 see 3 contiguous maps, 6-11 see 4 contiguous, 12-14 see 4 non-contiguous, 15 sees all 6.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

# The 1989 paper says each H2 map takes 8 of the 12 H1 maps but not which; we use three groups of
# four H2 maps over H1 maps 0-7, 4-11 and {0-3, 8-11}, so every H1 map feeds 8 of the 12 H2 maps.
H2_TABLE: tuple[tuple[int, ...], ...] = (
    *[tuple(range(0, 8))] * 4,
    *[tuple(range(4, 12))] * 4,
    *[(0, 1, 2, 3, 8, 9, 10, 11)] * 4,
)


def squash(a: torch.Tensor) -> torch.Tensor:
    """f(a) = 1.7159 tanh(2a/3): the scaled tanh of LeCun et al. (1998, appendix A)."""
    return 1.7159 * torch.tanh(a * (2.0 / 3.0))


def connection_mask(table: tuple[tuple[int, ...], ...], in_maps: int) -> torch.Tensor:
    """(out_maps, in_maps) 0/1 mask: mask[o, i] = 1 when input map i feeds output map o."""
    mask = torch.zeros(len(table), in_maps)
    for o, ins in enumerate(table):
        mask[o, list(ins)] = 1.0
    return mask


class SparseConv2d(nn.Module):
    """A convolution whose output maps see only the input maps a connection table allows.

    The weight is stored whole, (out, in, k, k), and multiplied by the 0/1 mask in every forward, so a
    masked entry never affects the output and its gradient is exactly zero; it starts at zero too, so
    the saved weights show the table.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], in_maps: int, kernel: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.register_buffer("mask", connection_mask(table, in_maps)[:, :, None, None], persistent=False)
        fan_in = self.mask.sum((1, 2, 3)) * kernel * kernel  # (out,) inputs each unit really has
        bound = 1 / fan_in.sqrt()  # uniform(+-1/sqrt(fan-in)), as torch initialises the unmasked layers
        w = (torch.rand(len(table), in_maps, kernel, kernel) * 2 - 1) * bound[:, None, None, None]
        self.weight = nn.Parameter(w * self.mask)
        self.bias = nn.Parameter(torch.zeros(len(table))) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)


class Subsample(nn.Module):
    """LeNet-5's S layers: sum of each 2x2 window, times a per-map coefficient, plus a per-map bias."""

    def __init__(self, maps: int):
        super().__init__()
        self.coef = nn.Parameter(torch.full((maps,), 0.25))  # starts as the window average
        self.bias = nn.Parameter(torch.zeros(maps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.avg_pool2d(x, 2) * 4  # (N, maps, H/2, W/2): the window sums
        return s * self.coef[:, None, None] + self.bias[:, None, None]


# -- LeNet-5 (1998) -------------------------------------------------------------------------------


@dataclass
class LeNet5Config:
    image_size: int = 32  # the paper pads MNIST's 28x28 to 32x32 so strokes reach C5's centre fields
    c1_maps: int = 6
    c3_maps: int = 16  # must be 16 when c3_table is "paper"
    c3_table: str = "paper"  # "paper" (Table I) or "full" (every C3 map sees every S2 map)
    c5_units: int = 120
    f6_units: int = 84
    num_classes: int = 10
    output: str = "rbf"  # "rbf": Euclidean RBF units + the eq. 9 loss; "linear": linear layer + cross-entropy
    rubbish_j: float = 1.0  # eq. 9's constant j (the rubbish class's logit is -j)
    code_seed: int = 0  # seed of the fixed random +-1 RBF codes
    num_channels: int = 1  # the paper's grey images; 3 for colour (C1 then sums over the channels)


class LeNet5(nn.Module):
    config_class = LeNet5Config

    def __init__(self, config: LeNet5Config):
        super().__init__()
        c = config
        if c.output not in ("rbf", "linear"):
            raise ValueError(f"output must be 'rbf' or 'linear', got {c.output!r}")
        if c.c3_table not in ("paper", "full"):
            raise ValueError(f"c3_table must be 'paper' or 'full', got {c.c3_table!r}")
        if c.c3_table == "paper" and (c.c1_maps, c.c3_maps) != (6, 16):
            raise ValueError(f"the paper's C3 table joins 6 S2 maps to 16 C3 maps, got {c.c1_maps} and {c.c3_maps}")
        if c.image_size < 32 or c.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 and >= 32, got {c.image_size}")
        self.config = c
        table = C3_TABLE if c.c3_table == "paper" else (tuple(range(c.c1_maps)),) * c.c3_maps
        self.c1 = nn.Conv2d(c.num_channels, c.c1_maps, 5)
        self.s2 = Subsample(c.c1_maps)
        self.c3 = SparseConv2d(table, c.c1_maps, 5)
        self.s4 = Subsample(c.c3_maps)
        side = ((c.image_size - 4) // 2 - 4) // 2  # S4's side: 5 for a 32x32 input
        self.c5 = nn.Conv2d(c.c3_maps, c.c5_units, side)  # 5x5 on a 5x5 map: a full connection
        self.f6 = nn.Linear(c.c5_units, c.f6_units)
        if c.output == "rbf":
            g = torch.Generator().manual_seed(c.code_seed)
            codes = torch.randint(0, 2, (c.num_classes, c.f6_units), generator=g).float() * 2 - 1
            self.register_buffer("rbf_codes", codes)  # (classes, f6): fixed, never trained
        else:
            self.out = nn.Linear(c.f6_units, c.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, num_channels, H, W) -> F6's (N, f6_units)."""
        x = squash(self.c1(x))  # (N, 6, 28, 28)
        x = squash(self.s2(x))  # (N, 6, 14, 14)
        x = squash(self.c3(x))  # (N, 16, 10, 10)
        x = squash(self.s4(x))  # (N, 16, 5, 5)
        x = squash(self.c5(x)).flatten(1)  # (N, 120, 1, 1) -> (N, 120)
        return squash(self.f6(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes): -y_i, the negated RBF distances, or the linear layer's output."""
        h = self.features(x)
        if self.config.output == "rbf":
            return -torch.cdist(h, self.rbf_codes).square()  # -y_i = -sum_j (x_j - w_ij)^2
        return self.out(h)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Eq. 9 for the RBF head (mean over the batch), plain cross-entropy for the linear one."""
        if self.config.output == "linear":
            return F.cross_entropy(logits, y)
        rubbish = torch.full_like(logits[:, :1], -self.config.rubbish_j)
        return F.cross_entropy(torch.cat([logits, rubbish], 1), y)  # -log p(D) = y_D + log(e^-j + sum e^-y_i)


# -- LeNet 1989 (zip codes) -----------------------------------------------------------------------


@dataclass
class LeNet1989Config:
    image_size: int = 16
    h1_maps: int = 12
    h2_maps: int = 12
    h2_inputs: str = "paper"  # "paper": each H2 map sees 8 of the 12 H1 maps (H2_TABLE); "full": all 12
    h3_units: int = 30
    num_classes: int = 10


class LeNet1989(nn.Module):
    config_class = LeNet1989Config

    def __init__(self, config: LeNet1989Config):
        super().__init__()
        c = config
        if c.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {c.image_size}")
        if c.h2_inputs == "paper" and (c.h1_maps, c.h2_maps) != (12, 12):
            raise ValueError(f"the 8-of-12 H2 table needs 12 H1 and 12 H2 maps, got {c.h1_maps} and {c.h2_maps}")
        self.config = c
        s1, s2 = c.image_size // 2, c.image_size // 4  # 8 and 4 for a 16x16 image
        # 5x5 kernels at stride 2 over the image padded by 2 (the paper extends it with -1 background)
        self.h1 = nn.Conv2d(1, c.h1_maps, 5, stride=2, bias=False)
        self.h1_bias = nn.Parameter(torch.zeros(c.h1_maps, s1, s1))  # one bias per unit, not per map
        table = H2_TABLE if c.h2_inputs == "paper" else (tuple(range(c.h1_maps)),) * c.h2_maps
        self.h2 = SparseConv2d(table, c.h1_maps, 5, stride=2, bias=False)
        self.h2_bias = nn.Parameter(torch.zeros(c.h2_maps, s2, s2))
        self.h3 = nn.Linear(c.h2_maps * s2 * s2, c.h3_units)
        self.out = nn.Linear(c.h3_units, c.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 16, 16) in [-1, 1] -> outputs (N, 10) in (-1.7159, 1.7159)."""
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)  # (N, 1, 20, 20): background is -1 in the paper's scaling
        x = squash(self.h1(x) + self.h1_bias)  # (N, 12, 8, 8)
        x = F.pad(x, (2, 2, 2, 2))  # (N, 12, 12, 12): H2 sees neutral zero activity beyond H1's border
        x = squash(self.h2(x) + self.h2_bias)  # (N, 12, 4, 4)
        x = squash(self.h3(x.flatten(1)))  # (N, 192) -> (N, 30)
        return squash(self.out(x))

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean squared error against +-1 targets (the correct class +1, the others -1)."""
        targets = F.one_hot(y, self.config.num_classes).float() * 2 - 1
        return F.mse_loss(outputs, targets)


PRESETS = {
    "lenet5": LeNet5Config(),
    "lenet5-linear": LeNet5Config(output="linear"),
    "tiny": LeNet5Config(c5_units=16, f6_units=12),
}
