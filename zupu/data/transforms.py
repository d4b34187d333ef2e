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
