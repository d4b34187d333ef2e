"""A tiny autoencoder between images and a latent diffusion model's latents: TAESD / TAEF2.

Latent diffusion (Rombach et al. 2022, https://arxiv.org/abs/2112.10752, section 3) denoises in the latent
space of an autoencoder, 8x smaller per side, instead of pixels. The autoencoders of Stable Diffusion and
FLUX are large; O. Boer Bohan's TAESD family (https://github.com/madebyollin/taesd, MIT) distils them into
small all-convolutional networks with the same latent space: three stride-2 stages of residual conv
blocks (conv-ReLU-conv-ReLU-conv plus a skip, then ReLU), and the mirror image with nearest-neighbour
upsampling. TAEF2 (FLUX.2's 32-channel latents) adds a global path to the lowest-resolution blocks, a
1x1 conv -> GroupNorm -> ReLU -> 1x1 conv added to the block's input. The decoder first soft-clamps the
latents, 3 tanh(z / 3). Images are RGB in [0, 1].

The layer order and names are the reference's, so its `taef2_encoder.pth` / `taef2_decoder.pth` load as
they are (`zupu.hf.diffusion.load_taesd`; the weights registry's `taef2`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zupu.errors import SettingError


@dataclass
class TinyAutoencoderConfig:
    latent_channels: int = 32
    width: int = 64
    midblock_gn: bool = True  # TAEF2's global path in the lowest-resolution blocks


def _conv(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class ResidualBlock(nn.Module):
    def __init__(self, c: int, midblock_gn: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(c, c), nn.ReLU(), _conv(c, c), nn.ReLU(), _conv(c, c))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()
        # the global path: 4x wider 1x1 convs around a GroupNorm, whose statistics span the whole image
        self.pool = nn.Sequential(nn.Conv2d(c, 4 * c, 1, bias=False), nn.GroupNorm(4, 4 * c), nn.ReLU(),
                                  nn.Conv2d(4 * c, c, 1, bias=False)) if midblock_gn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


class SoftClamp(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / 3) * 3


class TinyAutoencoder(nn.Module):
    """`encode(images (B, 3, H, W) in [0, 1]) -> latents (B, C, H/8, W/8)`, `decode` back; `forward` is both."""

    config_class = TinyAutoencoderConfig

    def __init__(self, config: TinyAutoencoderConfig):
        super().__init__()
        self.config = config
        w, gn = config.width, config.midblock_gn

        def blocks(n: int, mid: bool = False) -> list[nn.Module]:
            return [ResidualBlock(w, mid and gn) for _ in range(n)]

        self.encoder = nn.Sequential(
            _conv(3, w), *blocks(1),
            _conv(w, w, 2, False), *blocks(3),  # 1/2
            _conv(w, w, 2, False), *blocks(3),  # 1/4
            _conv(w, w, 2, False), *blocks(3, mid=True),  # 1/8
            _conv(w, config.latent_channels))
        self.decoder = nn.Sequential(
            SoftClamp(), _conv(config.latent_channels, w), nn.ReLU(),
            *blocks(3, mid=True), nn.Upsample(scale_factor=2), _conv(w, w, bias=False),  # 1/4
            *blocks(3), nn.Upsample(scale_factor=2), _conv(w, w, bias=False),  # 1/2
            *blocks(3), nn.Upsample(scale_factor=2), _conv(w, w, bias=False),  # 1/1
            *blocks(1), _conv(w, 3))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.size(1) != 3 or images.size(2) % 8 or images.size(3) % 8:
            raise SettingError(f"images must be (B, 3, H, W) RGB in [0, 1] with H and W multiples of 8, got "
                               f"{tuple(images.shape)}")
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))
