"""Batch sources: `source(step) -> batch`, a pure function of (seed, step).

Because a batch depends only on the step number, resuming at step k reproduces exactly the
batches an uninterrupted run would have seen, with no iterator state to save.
"""

from __future__ import annotations

import torch


class TensorBatches:
    """Shuffled mini-batches over aligned tensors, a fresh permutation each epoch."""

    def __init__(self, *tensors: torch.Tensor, batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True):
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors must have the same length, got {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors, self.n, self.seed, self.shuffle = tensors, n, seed, shuffle
        self.batch_size = min(batch_size, n)
        full, rest = divmod(n, self.batch_size)
        self.steps_per_epoch = full if drop_last or rest == 0 else full + 1
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                self._perm = torch.randperm(self.n, generator=g)
            else:
                self._perm = torch.arange(self.n)
            self._epoch = epoch
        return self._perm

    def __call__(self, step: int) -> tuple[torch.Tensor, ...]:
        epoch, i = divmod(step, self.steps_per_epoch)
        idx = self._permutation(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        return tuple(t[idx] for t in self.tensors)


class RandomWindows:
    """Random contiguous windows (x, y = x shifted by one) from a 1-D token tensor, for language models."""

    def __init__(self, tokens: torch.Tensor, block_size: int, batch_size: int, seed: int = 0):
        if len(tokens) <= block_size + 1:
            raise ValueError(f"need more than {block_size + 1} tokens for block_size {block_size}, got {len(tokens)}")
        self.tokens, self.block_size, self.batch_size, self.seed = tokens, block_size, batch_size, seed
        self._offsets = torch.arange(block_size + 1)

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        starts = torch.randint(len(self.tokens) - self.block_size - 1, (self.batch_size,), generator=g)
        rows = self.tokens[starts[:, None] + self._offsets]  # (B, T+1)
        return rows[:, :-1], rows[:, 1:]


class AugmentedBatches:
    """Another batch source with `augment(x, generator)` applied to x; the generator is seeded with
    `seed * stride + step`, so the batches stay a pure function of (seed, step) and --resume stays exact."""

    def __init__(self, batches: TensorBatches, augment, seed: int = 0, stride: int = 1_000_003):
        self.batches, self.augment, self.seed, self.stride = batches, augment, seed, stride
        self.steps_per_epoch = batches.steps_per_epoch

    def __call__(self, step: int) -> tuple[torch.Tensor, ...]:
        x, *rest = self.batches(step)
        g = torch.Generator().manual_seed(self.seed * self.stride + step)
        return (self.augment(x, g), *rest)
