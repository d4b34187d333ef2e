"""The symmetries of a square board: 4 rotations, each with or without a mirror (the dihedral group D4).

A position and its search probabilities, turned or mirrored together, are as good a training example as the
original (AlphaGo Zero augments its data with the 8 for Go; tic-tac-toe has the same ones). Transform `k` in
0..7 turns the board k % 4 quarter turns counter-clockwise and then, for k >= 4, mirrors it left to right.
Actions are cells numbered row by row (OpenSpiel's order for tic-tac-toe and Go, without Go's pass);
`BoardGame.action_permutation` maps a game's actions (Connect-4's columns, Go's pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

COUNT = 8


def transform(x: torch.Tensor, k: int) -> torch.Tensor:
    """Transform `k` of board-shaped tensors `(..., H, W)` with H == W."""
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return y.flip(-1) if k >= 4 else y


def cell_permutation(size: int, k: int) -> torch.Tensor:
    """`perm` with `transform(p.view(size, size), k).flatten() == p[perm]` for any per-cell vector p."""
    return transform(torch.arange(size * size).view(size, size), k).flatten()


def map_action(action: int, size: int, k: int) -> int:
    """Where transform `k` moves the cell `action`."""
    return int((cell_permutation(size, k) == action).nonzero())


def augment(planes: torch.Tensor, policy: torch.Tensor, ks: torch.Tensor, transforms: Sequence[int],
            permutation: Callable[[int], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply transform `transforms[ks[i]]` to example i: planes `(B, C, H, W)` and policies `(B, A)`, where
    `policy[:, permutation(k)]` is a policy seen through transform k (cells move, Go's pass stays)."""
    every_planes = torch.stack([transform(planes, k) for k in transforms])  # (T, B, C, H, W)
    every_policy = torch.stack([policy[:, permutation(k)] for k in transforms])  # (T, B, A)
    rows = torch.arange(len(ks))
    return every_planes[ks, rows], every_policy[ks, rows]
