"""MNIST digits painted in one of six colours and captioned "a red seven": the real image-text pairs that CLIP's
zero-shot recipe and DALL-E's drawing recipe share.

Ten colour x digit pairs are held out of training (`held_out`): digit d is never shown, or captioned, in colour
(d + shift) mod 6, so every colour and every digit is still seen with other partners, and a model judged on the
held-out pairs must compose what it learnt apart.
"""

from __future__ import annotations

from functools import cache

import torch

from zupu import data
from zupu.data.transforms import images, split_indices

COLOURS = {"red": (1.0, 0.15, 0.15), "green": (0.15, 0.9, 0.15), "blue": (0.2, 0.35, 1.0),
           "yellow": (1.0, 0.9, 0.1), "cyan": (0.1, 0.9, 0.9), "purple": (0.7, 0.2, 0.9)}
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RGB = torch.tensor(list(COLOURS.values()))  # (6, 3)
PAIRS = len(DIGITS) * len(COLOURS)  # pair index: digit * 6 + colour


def held_out(digit: torch.Tensor, shift: int) -> torch.Tensor:
    """The colour each digit is never shown in during training: digit d in colour (d + shift) mod 6, so every
    colour and every digit is still seen, with other partners."""
    return (digit + shift) % len(COLOURS)


def caption(digit: int, colour: int) -> str:
    return f"a {list(COLOURS)[colour]} {DIGITS[digit]}"


def captions() -> list[str]:
    """The 60 captions in pair order (digit * 6 + colour)."""
    return [caption(d, c) for d in range(len(DIGITS)) for c in range(len(COLOURS))]


def paint(x: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) grey digits in [0, 1] and (N,) colour indices -> (N, 3, 28, 28) in [-1, 1] on black."""
    return (x[:, None] * RGB[colour][:, :, None, None]) * 2 - 1


@cache
def mnist_splits(val_size: int, test_limit: int) -> dict[str, torch.Tensor]:
    """The 5,000 real training digits less `val_size` for choosing settings (x, y; x_val, y_val) and the first
    `test_limit` t10k digits (x_test, y_test): grey (N, 28, 28) in [0, 1], labels (N,). Never modify in place."""
    d = data.load("mnist")
    x, y = images(d["train"].x), torch.from_numpy(d["train"].y)
    train, val = split_indices(len(y), val_size / len(y), 0)
    return {"x": x[train], "y": y[train], "x_val": x[val], "y_val": y[val],
            "x_test": images(d["test"].x[:test_limit]), "y_test": torch.from_numpy(d["test"].y[:test_limit])}
