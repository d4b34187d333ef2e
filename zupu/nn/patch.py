"""Patch embedding (Dosovitskiy et al. 2020): cut the image into P x P patches and project each linearly,
which is a convolution with kernel = stride = P (CLIP's has no bias)."""

from __future__ import annotations

import torch
from torch import nn

from zupu.errors import SettingError


class PatchEmbed(nn.Module):
    def __init__(self, image_size: int, patch_size: int, in_channels: int, d_model: int, bias: bool = True):
        super().__init__()
        if image_size % patch_size:
            raise SettingError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size = image_size, patch_size
        self.n_patches = (image_size // patch_size) ** 2
        self.in_channels = in_channels
        self.proj = nn.Conv2d(in_channels, d_model, patch_size, stride=patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.size(1) != self.in_channels:
            raise SettingError(f"expected images (B, {self.in_channels}, H, W) with {self.in_channels} channel(s), "
                               f"got shape {tuple(x.shape)}; convert the images to that many channels")
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise SettingError(f"expected {self.image_size}x{self.image_size} images, got {tuple(x.shape[-2:])}; "
                               "resize or crop them to that size")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, H/P, W/P) -> (B, N, C)
