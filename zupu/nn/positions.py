"""Position encodings: the fixed sinusoids of Vaswani et al. (2017), section 3.5.

    PE(pos, 2i) = sin(pos / 10000^(2i/d)),   PE(pos, 2i+1) = cos(pos / 10000^(2i/d))

Learned positions (GPT, BERT, ViT) are a plain `nn.Embedding` / parameter in the member's own file.
"""

from __future__ import annotations

import math

import torch


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
