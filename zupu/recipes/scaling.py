"""Scaling laws: validation loss against model size, fitted by a power law (Kaplan et al. 2020).

J. Kaplan et al., "Scaling Laws for Neural Language Models" (2020), https://arxiv.org/abs/2001.08361,
find that a language model's loss falls as a power law in its non-embedding parameter count N,

    L(N) = L_inf + (N_c / N) ** alpha,      alpha_N ~ 0.076 for GPT-2-like models on WebText2,

over seven orders of magnitude. Here a sweep trains character-level GPTs of growing width on the
same data (tiny Shakespeare) for the same number of steps, fits the three constants, and reports the
exponent and R^2. R^2 cannot tell a power law from other curves here (a log-linear one reaches 0.99 on
these sizes too), so the milestone is a prediction instead: the law fitted to every model but the
largest predicts the largest one's loss, and the same is asked of a log-linear and an exponential
curve, so a reader sees which shape extrapolates best. The models span about two orders of magnitude
(thousands to a few hundred thousand parameters) and are trained for minutes, so the exponent describes
this small, short regime: it is not comparable to the paper's, whose models were trained on far more
data to near convergence.

`zupu scaling [--quick] [--out DIR] [--set widths=16,32,64]` runs the sweep; `zupu train scaling`
does the same through the common recipe interface (and the tour shows it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from zupu import data
from zupu.atomic import write_json
from zupu.errors import SettingError
from zupu.models.gpt import GPT, GPTConfig
from zupu.progress import progress
from zupu.recipe import Milestone, Recipe
from zupu.recipes.gpt import split, val_loss
from zupu.tokenizers import CharTokenizer
from zupu.train.batches import RandomWindows
from zupu.train.device import of, to_device
from zupu.train.optim import make_schedule


@dataclass
class SweepSettings:
    widths: tuple[int, ...] = (16, 24, 32, 48, 64, 96)  # n_embd of each model, smallest first
    n_layer: int = 2
    head_size: int = 16  # n_head = n_embd // head_size
    block_size: int = 64
    batch_size: int = 16
    steps: int = 400  # the same for every size: fixed data
    lr: float = 4e-3
    warmup: int = 20
    eval_tokens: int = 32768  # validation tokens per model (a fixed prefix of the split)
    threads: int = 1  # these matmuls are too small to share between cores


def fit_power_law(n: np.ndarray, loss: np.ndarray, grid: int = 2000) -> dict[str, float]:
    """Least-squares fit of L(N) = L_inf + (N_c / N)^alpha.

    For a fixed L_inf the model is linear in log space, log(L - L_inf) = alpha log N_c - alpha log N, so
    a 1-D search over L_inf in [0, min L) with a linear fit at each point finds the best of all three;
    the search keeps the L_inf whose curve has the smallest squared error in L itself. R^2 is 1 minus
    that error over the variance of L."""
    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if len(n) < 4:
        raise ValueError(f"a three-constant fit needs at least 4 sizes, got {len(n)}")
    best = None
    for l_inf in np.linspace(0.0, loss.min(), grid, endpoint=False):
        slope, intercept = np.polyfit(np.log(n), np.log(loss - l_inf), 1)
        alpha = -slope
        if alpha <= 0:
            continue
        pred = l_inf + np.exp(intercept + slope * np.log(n))
        sse = float(((loss - pred) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, l_inf, alpha, math.exp(intercept / alpha))
    if best is None:
        raise ValueError("loss does not fall with size: no power law with a positive exponent fits")
    sse, l_inf, alpha, n_c = best
    r2 = 1.0 - sse / float(((loss - loss.mean()) ** 2).sum())
    return {"alpha": float(alpha), "n_c": float(n_c), "l_inf": float(l_inf), "r2": float(r2)}


def predict(fit: dict[str, float], n: np.ndarray) -> np.ndarray:
    return fit["l_inf"] + (fit["n_c"] / np.asarray(n, dtype=float)) ** fit["alpha"]


def fit_log_linear(n: np.ndarray, loss: np.ndarray) -> dict[str, float]:
    """L(N) = a + b log N: the rival shape that any slowly bending curve also fits with a high R^2."""
    b, a = np.polyfit(np.log(np.asarray(n, dtype=float)), np.asarray(loss, dtype=float), 1)
    return {"a": float(a), "b": float(b)}


def fit_exponential(n: np.ndarray, loss: np.ndarray, grid: int = 400) -> dict[str, float]:
    """L(N) = c + d exp(-N / N_0): a curve that saturates far faster than a power law. For each N_0 on a
    log grid spanning the sizes the model is linear in (c, d); the least-squares best of all three."""
    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    best = None
    for n0 in np.geomspace(n.min() / 10, n.max() * 10, grid):
        x = np.stack([np.ones_like(n), np.exp(-n / n0)], 1)  # (sizes, 2)
        coef = np.linalg.lstsq(x, loss, rcond=None)[0]
        sse = float(((x @ coef - loss) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, {"c": float(coef[0]), "d": float(coef[1]), "n0": float(n0)})
    return best[1]


SHAPES = {  # name: (fit, prediction at sizes n)
    "power_law": (fit_power_law, lambda f, n: predict(f, n)),
    "log_linear": (fit_log_linear, lambda f, n: f["a"] + f["b"] * np.log(np.asarray(n, dtype=float))),
    "exponential": (fit_exponential, lambda f, n: f["c"] + f["d"] * np.exp(-np.asarray(n, dtype=float) / f["n0"])),
}


def held_out_errors(n: np.ndarray, loss: np.ndarray) -> dict[str, float]:
    """Each curve shape fitted to every size but the largest, then asked for the largest one's loss: the
    relative error of that prediction, `holdout_error_<shape>`. R^2 on the fitted points cannot tell the
    shapes apart (a log-linear curve reaches 0.999 on these sizes); extrapolating one step can. The naive
    `holdout_error_flat` (the largest model no better than the next) is the error a shape must beat."""
    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    out = {f"holdout_error_{name}": float(abs(pred(fit(n[:-1], loss[:-1]), n[-1:])[0] - loss[-1]) / loss[-1])
           for name, (fit, pred) in SHAPES.items()}
    out["holdout_error_flat"] = float(abs(loss[-2] - loss[-1]) / loss[-1])
    out["best_shape"] = min(SHAPES, key=lambda name: out[f"holdout_error_{name}"])
    return out


def config(vocab: int, width: int, s: SweepSettings) -> GPTConfig:
    return GPTConfig(vocab_size=vocab, n_positions=s.block_size, n_embd=width, n_layer=s.n_layer,
                     n_head=max(1, width // s.head_size), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def train_one(model: GPT, train_ids: torch.Tensor, s: SweepSettings, seed: int) -> None:
    batches = RandomWindows(train_ids, s.block_size, s.batch_size, seed=seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=s.lr, betas=(0.9, 0.99), fused=True)
    sched = make_schedule(opt, "linear", s.steps, s.warmup)
    model.train()
    device = of(model)
    for step in range(s.steps):
        x, y = to_device(batches(step), device)
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()


class SizeSweep(Recipe):
    name = "char-sweep"
    summary = "GPTs of 6 widths, same data and steps, on tiny Shakespeare: L(N) = L_inf + (N_c/N)^alpha"
    Settings = SweepSettings
    # the power law fitted to the 5 smaller models predicts the largest one's loss within 1.5%; measured at
    # seed 0: 0.85% (log-linear 0.52%, exponential 2.7%; "no better than the next size" 3.9%)
    milestone = Milestone("holdout_error_power_law", 0.015, higher_is_better=False,
                          paper="Kaplan et al. (2020): L(N) a power law, alpha_N ~ 0.076 "
                          "(models to 1.5B, near convergence; ours are tiny and short)")
    quick = {"widths": (16, 24, 32, 48, 64), "steps": 200}
    # 200 steps are noisy (R^2 0.99 / 0.96 / 0.44 at seeds 0-2: one size trains badly at seed 2); the held-out
    # prediction is not: 1.14% / 0.47% / 0.91% at seeds 0, 1, 2, where "no better than the next size" is 0.97% /
    # 1.35% / 1.23%, so at quick settings the law does not reliably beat that naive guess
    quick_milestone = Milestone("holdout_error_power_law", 0.015, higher_is_better=False,
                                paper="the full sweep's bound, reached at seeds 0-2")
    quick_seconds = 20.0  # 18 s at one thread, seed 0, load ~2 (seeds 1, 2: 46 s, 35 s at load 5-8)
    tiny = {"widths": (8, 12, 16, 20, 24), "steps": 30, "eval_tokens": 2048, "block_size": 32}

    def data(self) -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
        text = data.load("tinyshakespeare")
        tok = CharTokenizer.from_text(text)
        return (tok, *split(torch.tensor(tok.encode(text), dtype=torch.long)))

    def build(self, s: SweepSettings) -> GPT:
        """The largest model of the sweep: the one the run directory keeps."""
        return GPT(config(self.data()[0].vocab_size, max(s.widths), s))

    def train(self, model: GPT, s: SweepSettings, run) -> dict:
        widths = sorted(s.widths)
        if len(widths) < 5:
            raise SettingError(f"a scaling sweep needs at least 5 sizes, got widths={widths}; "
                               "set e.g. widths=16,24,32,48,64")
        tok, train_ids, val_ids = self.data()
        rows = []
        for width in progress(iterable=widths, desc="scaling sweep", unit="model"):
            torch.manual_seed(run.seed)
            net = model if width == max(widths) else GPT(config(tok.vocab_size, width, s)).to(of(model))
            train_one(net, train_ids, s, run.seed)
            loss = val_loss(net, val_ids, s.block_size, s.eval_tokens)
            rows.append({"n_embd": width, "params": net.num_params(), "val_loss": loss})
            run.log(len(rows), params=rows[-1]["params"], val_loss=loss)
        n, loss = np.array([r["params"] for r in rows]), np.array([r["val_loss"] for r in rows])
        fit, held_out = fit_power_law(n, loss), held_out_errors(n, loss)
        write_json(run.out / "sweep.json", {"sizes": rows, "fit": fit, "held_out": held_out})
        return {**fit, **held_out, "sizes": len(rows), "smallest_params": rows[0]["params"],
                "largest_params": rows[-1]["params"], "val_loss_largest": rows[-1]["val_loss"]}

    def evaluate(self, model: GPT, s: SweepSettings) -> dict:
        """The saved model is the sweep's largest."""
        return {"val_loss_largest": val_loss(model, self.data()[2], s.block_size, s.eval_tokens)}

    def example(self, s: SweepSettings) -> tuple[torch.Tensor]:
        return (self.data()[2][: 2 * s.block_size].view(2, s.block_size),)  # two windows of validation text

    def figures(self, model: GPT, s: SweepSettings, run) -> None:
        import matplotlib.pyplot as plt

        from zupu.train.plots import save

        sweep = json.loads((run.out / "sweep.json").read_text())
        rows, fit = sweep["sizes"], sweep["fit"]
        n = np.array([r["params"] for r in rows], dtype=float)
        grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        ax.plot(n, [r["val_loss"] for r in rows], "o", label="measured (val loss)")
        ax.plot(grid, predict(fit, grid), "-", label=f"$L_\\infty$ + ($N_c$/N)$^{{{fit['alpha']:.3f}}}$, "
                f"$R^2$ = {fit['r2']:.3f}")
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters N")
        ax.set_ylabel("validation loss (nats/char)")
        ax.set_title(f"{len(rows)} char GPTs, {s.steps} steps each, tiny Shakespeare", fontsize=9)
        ax.legend(fontsize=8)
        save(fig, run.path("scaling.png"))


RECIPES = [SizeSweep()]
