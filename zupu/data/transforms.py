"""Image transforms shared by the image members."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def images(x: np.ndarray, size: int | None = None, scale: float = 255.0) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, size, size) in [0, 1]; resizing averages pixel areas."""
    t = torch.tensor(x, dtype=torch.float32).div_(scale)
    if size is not None and size != t.shape[-1]:
        t = F.interpolate(t[:, None], size=(size, size), mode="area")[:, 0]
    return t


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded shuffle split (train, test) of range(n)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = round(n * test_fraction)
    return perm[n_test:], perm[:n_test]


def shift_and_flip(x: torch.Tensor, shift: int, flip: bool, g: torch.Generator, fill: float = 0.0) -> torch.Tensor:
    """Random translations of up to `shift` pixels (crops of the `fill`-padded image) and left-right flips.

    x: (N, C, H, W); each image gets its own offsets and flip, drawn from `g`.
    """
    n, c, h, w = x.shape
    if flip:
        mirrored = torch.rand(n, generator=g) < 0.5
        x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
    if shift:
        padded = F.pad(x, (shift,) * 4, value=fill)  # (N, C, H + 2s, W + 2s)
        dy, dx = torch.randint(0, 2 * shift + 1, (2, n), generator=g)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    return x
