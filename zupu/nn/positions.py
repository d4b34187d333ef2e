"""Position encodings.

Fixed sinusoids (Vaswani et al. 2017, section 3.5), added to the token embeddings:

    PE(pos, 2i) = sin(pos / 10000^(2i/d)),   PE(pos, 2i+1) = cos(pos / 10000^(2i/d))

Rotary positions, RoPE (J. Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021,
https://arxiv.org/abs/2104.09864, eq. 34): q and k are rotated by angles proportional to their position, so
q_m . k_n depends only on m - n. Pairs (x_i, x_{i + d/2}) (Llama's half-split layout) turn by m * w_i,

    w_i = theta^(-2i/d),   RoPE(x, m) = x cos(m w) + rotate_half(x) sin(m w),   rotate_half(x) = (-x_2, x_1).

Llama 3.1 stretches the long wavelengths for a longer context: wavelengths above L / low_freq_factor are
divided by `factor`, those below L / high_freq_factor are kept, and those between are interpolated (L the
original context, `original_max_position_embeddings`).

Timestep embeddings (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", appendix B, after the
Transformer's sinusoids): a diffusion step t, possibly fractional, as [sin(t w_i), cos(t w_i)].

Learned positions (GPT, BERT, ViT) are a plain `nn.Embedding` / parameter in the member's own file.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from zupu.errors import SettingError, UnknownName


def sinusoidal(n_positions: int, d_model: int, interleave: bool = True) -> torch.Tensor:
    """(n_positions, d_model). `interleave=False` puts all sines before all cosines (MarianMT's layout)."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    angles = pos * freq  # (n_positions, ceil(d/2))
    table = torch.zeros(n_positions, d_model, dtype=torch.float64)
    if interleave:
        table[:, 0::2] = torch.sin(angles)
        table[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    else:
        half = (d_model + 1) // 2
        table[:, :half] = torch.sin(angles)
        table[:, half:] = torch.cos(angles[:, : d_model // 2])
    return table.float()


_LLAMA3 = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def rope_frequencies(head_dim: int, theta: float = 10000.0, scaling: dict[str, Any] | None = None) -> torch.Tensor:
    """The rotation rates w_i = theta^(-2i/d), (head_dim / 2,), in float32 as Llama computes them. `scaling` is a
    Hugging Face `rope_scaling` / `rope_parameters` dict; rope_type "default" or "llama3" (with its four fields)."""
    w = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "default":
        return w
    if kind != "llama3":
        raise UnknownName("rope_type", kind, ["default", "llama3"])
    missing = [f for f in _LLAMA3 if f not in scaling]
    if missing:
        raise SettingError(f"rope_type 'llama3' needs {', '.join(missing)} in its scaling parameters")
    factor, low, high, context = (scaling[f] for f in _LLAMA3)
    wavelength = 2 * math.pi / w
    scaled = torch.where(wavelength > context / low, w / factor, w)
    smooth = (context / wavelength - low) / (high - low)  # 0 at the long end of the band, 1 at the short end
    between = (wavelength >= context / high) & (wavelength <= context / low)
    return torch.where(between, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


class RotaryEmbedding(nn.Module):
    """positions -> (cos, sin) of m * w, each (T, head_dim) for positions (T,) or (B, 1, T, head_dim) for (B, T),
    shaped to broadcast over (B, heads, T, head_dim); `apply_rotary` turns q or k with them."""

    def __init__(self, head_dim: int, theta: float = 10000.0, scaling: dict[str, Any] | None = None):
        super().__init__()
        self.register_buffer("inv_freq", rope_frequencies(head_dim, theta, scaling), persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions[..., None].float() * self.inv_freq  # (..., T, head_dim / 2)
        angles = torch.cat([angles, angles], -1)  # (..., T, head_dim): both halves of each pair turn alike
        if positions.dim() == 2:
            angles = angles[:, None]  # (B, 1, T, head_dim): the same for every head
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE(x, m) = x cos + rotate_half(x) sin, x (B, heads, T, head_dim)."""
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


def timestep_embedding(t: torch.Tensor, dim: int, flip_sin_to_cos: bool = False, downscale_freq_shift: float = 1.0,
                       scale: float = 1.0, max_period: float = 10000.0) -> torch.Tensor:
    """t (N,) -> (N, dim): [sin(s t w_i), cos(s t w_i)], w_i = max_period^(-i / (dim/2 - shift)), i < dim/2,
    cosines first with `flip_sin_to_cos`, a zero column appended for odd dim (diffusers' `get_timestep_embedding`
    and `Timesteps` with the same arguments)."""
    if t.dim() != 1:
        raise SettingError(f"timesteps must be one number per sample, shape (N,); got {tuple(t.shape)}")
    half = dim // 2
    w = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
                  / (half - downscale_freq_shift))
    angles = scale * (t[:, None].float() * w)  # (N, half)
    parts = [angles.cos(), angles.sin()] if flip_sin_to_cos else [angles.sin(), angles.cos()]
    if dim % 2:
        parts.append(angles.new_zeros(len(t), 1))
    return torch.cat(parts, -1)
