"""Batch sources: `source(step) -> batch`, a pure function of (seed, step).

Because a batch depends only on the step number, resuming at step k reproduces exactly the
batches an uninterrupted run would have seen, with no iterator state to save.
"""

from __future__ import annotations

import torch


class TensorBatches:
    """Shuffled mini-batches over aligned tensors, a fresh permutation each epoch.

    With `lengths` (one per row, e.g. real tokens in a padded sequence pair), each epoch's shuffled order is
    cut into windows of `bucket_batches` batches, sorted by length within each window, and the full batches
    shuffled again: a batch holds rows of about one length, so trimming it to its longest row leaves little
    padding (on Tatoeba en->zh, the longest target per batch of 64 fell from 17.8 to 9.8 tokens on average),
    while the order stays random and a pure function of (seed, step).
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True, lengths: torch.Tensor | None = None, bucket_batches: int = 32):
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors must have the same length, got {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"lengths must have one entry per row ({n}), got {len(lengths)}")
        if bucket_batches < 1:
            raise ValueError(f"bucket_batches must be >= 1, got {bucket_batches}")
        self.tensors, self.n, self.seed, self.shuffle = tensors, n, seed, shuffle
        self.lengths, self.bucket_batches = lengths, bucket_batches
        self.batch_size = min(batch_size, n)
        full, rest = divmod(n, self.batch_size)
        self.steps_per_epoch = full if drop_last or rest == 0 else full + 1
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                self._perm = torch.randperm(self.n, generator=g)
                if self.lengths is not None:
                    self._perm = self._bucketed(self._perm, g)
            else:
                self._perm = torch.arange(self.n)
            self._epoch = epoch
        return self._perm

    def _bucketed(self, perm: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        window = self.batch_size * self.bucket_batches
        perm = torch.cat([w[self.lengths[w].argsort(stable=True)] for w in perm.split(window)])
        full = self.n // self.batch_size  # the full batches trade places; a short last one stays last
        order = torch.randperm(full, generator=g)
        return torch.cat([perm[: full * self.batch_size].view(full, self.batch_size)[order].reshape(-1),
                          perm[full * self.batch_size :]])

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
