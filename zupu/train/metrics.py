"""Metrics that recipes compute the same way: one `accuracy` for every classifier, one Wilson interval for a
proportion; and their names as a reader wants them (`display_name`), for figures and the tour's report."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from zupu.train.device import of, to_device

WORDS = {"acc": "accuracy", "val": "validation", "err": "error", "mse": "mean squared error", "r2": "R²",
         "bleu": "BLEU", "chrf": "chrF", "ppl": "perplexity", "lr": "learning rate", "frac": "fraction",
         "sklearn": "scikit-learn", "rbm": "RBM", "p": "p-value", "kl": "KL", "nll": "NLL", "mlp": "MLP",
         "cnn": "CNN", "gpt": "GPT", "ppo": "PPO", "dpo": "DPO", "sft": "SFT"}


def display_name(metric: str) -> str:
    """`test_acc` -> "test accuracy", `acc_minus_sklearn_rbm` -> "accuracy minus scikit-learn RBM"."""
    return " ".join(WORDS.get(w, w) for w in metric.split("_"))


@torch.no_grad()
def accuracy(model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor,
             batch_size: int = 1000, predict: Callable[..., torch.Tensor] | None = None) -> float:
    """The fraction of `labels` the model gets right: `predict(*inputs)`, by default the argmax of
    `model(*inputs)` over its last dimension, on `batch_size` rows at a time (0: all at once, for models
    whose whole test set fits in one product). Dropout is off while it runs; the model's mode is restored.

    `inputs` is one tensor or several aligned ones (e.g. BERT's input_ids and attention_mask)."""
    inputs = (inputs,) if torch.is_tensor(inputs) else tuple(inputs)
    predict = predict or (lambda *x: model(*x).argmax(-1))
    n = len(labels)
    step = batch_size or n
    was_training = model.training
    model.eval()
    device = of(model)  # the chunks go where the model is; the data stays on the host
    right = 0
    try:
        for i in range(0, n, step):
            predicted = predict(*(to_device(t[i:i + step], device) for t in inputs))
            right += int((predicted == to_device(labels[i:i + step], predicted.device)).sum())
    finally:
        model.train(was_training)
    return right / n


def wilson_interval(hits: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for z = 1.96): sound near 0 and 1, where the
    normal approximation is not. `hits` may be fractional (a game score counting a draw as half a win)."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(wins: int, losses: int) -> float:
    """The exact two-sided sign test (McNemar's exact test on paired right/wrong outcomes): the probability, with
    no difference between the two, of a split of the wins + losses discordant pairs at least as uneven as
    this one; ties (both right or both wrong) carry no information and are left out."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(max(wins, losses), n + 1)) / 2 ** n  # P(X >= the larger count)
    return min(1.0, 2 * tail)
