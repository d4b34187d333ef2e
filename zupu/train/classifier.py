"""The loop that trains an image classifier for a number of epochs (LeNet, AlexNet, ViT share it)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zupu.train.batches import AugmentedBatches, TensorBatches
from zupu.train.metrics import accuracy
from zupu.train.optim import make_schedule
from zupu.train.run import Run
from zupu.train.trainer import Trainer


def fit_classifier(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                   optimizer: torch.optim.Optimizer, epochs: int, batch_size: int, seed: int, run: Run | None = None,
                   loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                   augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                   augment_stride: int = 1_000_003, warmup_epochs: int = 0, eval_every_epochs: int = 1,
                   log_every: int = 50, grad_clip: float | None = None, eval_batch: int = 1000,
                   desc: str = "train") -> dict[str, float]:
    """Train `model` on shuffled mini-batches of `train` (x, y) with `loss(model(x), y)`.

    The learning rate follows a cosine decay to zero after `warmup_epochs` of linear warm-up; `augment(x, g)`,
    if given, transforms each batch with a generator seeded by `seed * augment_stride + step` (a pure function
    of the step, so --resume stays exact); accuracy on `test` is logged every `eval_every_epochs` epochs and
    at the end, and a resume checkpoint is written every epoch. Returns the Trainer's final metrics
    (`test_acc`, `steps`)."""
    xte, yte = test
    batches = TensorBatches(*train, batch_size=batch_size, seed=seed)
    if augment is not None:
        batches = AugmentedBatches(batches, augment, seed, stride=augment_stride)
    per_epoch = batches.steps_per_epoch
    steps = epochs * per_epoch

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"loss": loss(model(x), y)}

    return Trainer(model, step, batches, optimizer, steps, run=run,
                   scheduler=make_schedule(optimizer, "cosine", steps, warmup=warmup_epochs * per_epoch),
                   evaluate=lambda: {"test_acc": accuracy(model, xte, yte, eval_batch)},
                   eval_every=eval_every_epochs * per_epoch, log_every=log_every, checkpoint_every=per_epoch,
                   grad_clip=grad_clip, desc=desc).fit()
