"""Back-propagation recipes: XOR over 20 seeds, the paper's 6-bit symmetry net, MNIST digits."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from zupu import data
from zupu.data.transforms import images
from zupu.models.backprop_mlp import MLP, MLPConfig
from zupu.recipe import Milestone, Recipe
from zupu.train.batches import TensorBatches
from zupu.train.device import of, to_device
from zupu.train.metrics import accuracy
from zupu.train.optim import make_schedule
from zupu.train.plots import image_grid, save
from zupu.train.trainer import Trainer


def sweep(model: MLP, opt: torch.optim.Optimizer, x: torch.Tensor, d: torch.Tensor) -> float:
    """One sweep through all cases, the paper's way: gradient summed over cases, then one update."""
    opt.zero_grad(set_to_none=True)
    error = model.backprop(x, d)
    opt.step()
    return error.item()


def solves(model: MLP, x: torch.Tensor, d: torch.Tensor) -> bool:
    with torch.no_grad():
        return bool(((model(x) > 0.5).float() == d).all())


@dataclass
class SmallSettings:
    seeds: int = 20
    max_sweeps: int = 4000
    lr: float = 2.0  # epsilon
    momentum: float = 0.9  # alpha


XOR_X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_D = torch.tensor([[0.0], [1.0], [1.0], [0.0]])


class Xor(Recipe):
    name = "xor"
    summary = "2-2-1 sigmoid net learns XOR, which no single unit can; success rate over 20 seeds"
    Settings = SmallSettings
    milestone = Milestone("success_rate", 0.8, paper="Rumelhart et al. (1986): XOR with hidden units; "
                          "occasional local minima")
    quick = {"seeds": 10}
    # success rates 1.0 / 0.5 / 0.8 over 10 nets at seeds 0, 1, 2 (2026-12-04): XOR's local minima catch a varying
    # share (the full 20 nets: 0.85 / 0.65 / 0.80), so the quick run asks that at least half escape them
    quick_milestone = Milestone("success_rate", 0.5, paper="the full recipe (20 nets): >= 0.8")
    quick_seconds = 7.0  # 2.1-6.1 s of CPU on one thread
    tiny = {"seeds": 2, "max_sweeps": 200}

    def build(self, s: SmallSettings) -> MLP:
        return MLP(MLPConfig((2, 2, 1), init_scale=1.0))

    def train(self, model: MLP, s: SmallSettings, run) -> dict:
        solved, sweeps_needed = 0, []
        x, d = to_device((XOR_X, XOR_D), of(model))
        for k in range(s.seeds):
            torch.manual_seed(run.seed * 1000 + k)
            net = model if k == 0 else self.build(s).to(x.device)  # the first seed's net is the one saved
            if k == 0:
                net.load_state_dict(self.build(s).state_dict())
            opt = torch.optim.SGD(net.parameters(), lr=s.lr, momentum=s.momentum)
            for n in range(1, s.max_sweeps + 1):
                error = sweep(net, opt, x, d)
                if k == 0 and n % 50 == 0:
                    run.log(n, loss=error)
                if solves(net, x, d) and error < 0.1:
                    solved += 1
                    sweeps_needed.append(n)
                    break
        return {"success_rate": solved / s.seeds, "seeds": s.seeds,
                "median_sweeps": float(torch.tensor(sweeps_needed).median()) if sweeps_needed else float("nan"),
                **self.evaluate(model, s)}

    def evaluate(self, model: MLP, s: SmallSettings) -> dict:
        return {"xor_correct": float(solves(model, *to_device((XOR_X, XOR_D), of(model))))}

    def example(self, s: SmallSettings) -> tuple[torch.Tensor]:
        return (XOR_X,)


SYM_X = torch.tensor(list(itertools.product((0.0, 1.0), repeat=6)))
SYM_D = (SYM_X.flip(1) == SYM_X).all(1).float()[:, None]  # 1 when the pattern is a palindrome


def symmetry_shape(model: MLP) -> dict:
    """How close each hidden unit's weights are to the paper's solution.

    antisymmetry: max |w_i + w_(7-i)| relative to max |w| (0 when mirror weights are exactly opposite);
    ratio_error: max relative deviation of the sorted pair magnitudes from 1:2:4.
    """
    w = model.weights[0].detach()  # (2 hidden, 6 inputs)
    anti = ((w + w.flip(1)).abs().max() / w.abs().max()).item()
    mags = w[:, :3].abs().sort(1).values  # (2, 3)
    ratios = mags / mags[:, :1]
    paper = torch.tensor([1.0, 2.0, 4.0], device=w.device)
    ratio_error = ((ratios - paper).abs() / paper).max().item()
    return {"antisymmetry": anti, "ratio_error": ratio_error}


@dataclass
class SymmetrySettings:
    max_tries: int = 10  # seeds tried until one net solves the task (2 hidden units often stall)
    max_sweeps: int = 3000
    lr: float = 0.1  # the paper's epsilon
    momentum: float = 0.9  # the paper's alpha


class Symmetry(Recipe):
    name = "symmetry"
    summary = "the paper's 6-bit mirror-symmetry net with 2 hidden units: antisymmetric weights in ratio 1:2:4"
    Settings = SymmetrySettings
    milestone = Milestone("paper_solution", 1.0, paper="Rumelhart et al. (1986) fig. 1: 1,425 sweeps, weights "
                          "symmetric with opposite signs, magnitudes 1:2:4")
    quick_milestone = milestone  # the quick run is the whole recipe: 1 / 1 / 1 at seeds 0, 1, 2 (2026-12-04)
    quick_seconds = 4.0  # 0.4-3.6 s of CPU on one thread (how many tries a seed needs)
    tiny = {"max_tries": 1, "max_sweeps": 200}

    def build(self, s: SymmetrySettings) -> MLP:
        return MLP(MLPConfig((6, 2, 1), init_scale=0.3))

    def train(self, model: MLP, s: SymmetrySettings, run) -> dict:
        x, d = to_device((SYM_X, SYM_D), of(model))
        for tries in range(1, s.max_tries + 1):
            torch.manual_seed(run.seed * 1000 + tries)
            model.load_state_dict(self.build(s).state_dict())
            opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum)
            for n in range(1, s.max_sweeps + 1):
                error = sweep(model, opt, x, d)
                if n % 50 == 0:
                    run.log((tries - 1) * s.max_sweeps + n, loss=error)
                if solves(model, x, d) and error < 0.5:
                    break
            if solves(model, x, d):
                break
        out = {"tries": tries, "sweeps": n, **self.evaluate(model, s)}
        out["paper_solution"] = float(out["solved"] == 1.0 and out["antisymmetry"] < 0.05
                                      and out["ratio_error"] < 0.25)
        return out

    def evaluate(self, model: MLP, s: SymmetrySettings) -> dict:
        return {"solved": float(solves(model, *to_device((SYM_X, SYM_D), of(model)))), **symmetry_shape(model)}

    def example(self, s: SymmetrySettings) -> tuple[torch.Tensor]:
        return (SYM_X[:4],)

    def figures(self, model: MLP, s: SymmetrySettings, run) -> None:
        w = model.weights[0].detach().numpy()
        fig, axes = plt.subplots(1, 2, figsize=(8, 2.6), sharey=True)
        for h, ax in enumerate(axes):
            ax.bar(range(1, 7), w[h], color=["C3" if v > 0 else "C0" for v in w[h]])
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"hidden unit {h + 1}  (bias {model.biases[0][h].item():.2f})", fontsize=9)
            ax.set_xlabel("input position")
        fig.suptitle("6-bit symmetry: mirror weights opposite, magnitudes 1:2:4", fontsize=10)
        save(fig, run.path("symmetry_weights.png"))


@dataclass
class MnistSettings:
    hidden: int = 128
    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.5
    momentum: float = 0.9
    init_scale: float = 0.05
    target_low: float = 0.1  # targets 0.1/0.9, not 0/1: sigmoids never reach 0/1, and chasing them saturates


def mnist_tensors():
    mnist = data.load("mnist")
    xtr, xte = (images(mnist[k].x).flatten(1) for k in ("train", "test"))
    return xtr, torch.from_numpy(mnist["train"].y), xte, torch.from_numpy(mnist["test"].y)


class Mnist(Recipe):
    name = "mnist"
    summary = "784-128-10 sigmoid net, squared error, momentum, hand-written deltas; MNIST 5k train / 10k test"
    Settings = MnistSettings
    milestone = Milestone("test_acc", 0.93, paper="LeCun et al. (1998): 2-layer NN, 300 hidden, 60k train: 95.3%")
    quick_milestone = milestone  # the quick run is the whole recipe: 0.9371 / 0.9372 / 0.9350 at seeds 0-2 (2026-12-04)
    quick_seconds = 14.0  # 10.5-13.4 s of CPU on one thread
    tiny = {"epochs": 1, "hidden": 16}

    def build(self, s: MnistSettings) -> MLP:
        return MLP(MLPConfig((784, s.hidden, 10), init_scale=s.init_scale))

    def train(self, model: MLP, s: MnistSettings, run) -> dict:
        xtr, ytr, xte, yte = mnist_tensors()
        targets = torch.nn.functional.one_hot(ytr, 10).float() * (1 - 2 * s.target_low) + s.target_low
        batches = TensorBatches(xtr, targets, batch_size=s.batch_size, seed=run.seed)
        opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum)
        steps = s.epochs * batches.steps_per_epoch
        trainer = Trainer(model, lambda b: {"loss": model.backprop(*b, reduction="mean")}, batches, opt, steps,
                          run=run, scheduler=make_schedule(opt, "cosine", steps),
                          evaluate=lambda: {"test_acc": accuracy(model, xte, yte, 0)},
                          eval_every=batches.steps_per_epoch, log_every=50,
                          checkpoint_every=batches.steps_per_epoch, desc="backprop-mlp mnist")
        final = trainer.fit()
        return {**final, "train_acc": accuracy(model, xtr, ytr, 0), **self.peer(s, xtr, ytr, xte, yte, run.seed)}

    @staticmethod
    def peer(s: MnistSettings, xtr, ytr, xte, yte, seed: int) -> dict:
        """scikit-learn's MLPClassifier (ReLU, Adam, cross-entropy) on the same split, same width and epochs."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sk = MLPClassifier((s.hidden,), max_iter=s.epochs, random_state=seed).fit(xtr.numpy(), ytr.numpy())
        return {"sklearn_test_acc": float(sk.score(xte.numpy(), yte.numpy()))}

    def evaluate(self, model: MLP, s: MnistSettings) -> dict:
        _, _, xte, yte = mnist_tensors()
        return {"test_acc": accuracy(model, xte, yte, 0)}

    def example(self, s: MnistSettings) -> tuple[torch.Tensor]:
        return (mnist_tensors()[2][:4],)

    def figures(self, model: MLP, s: MnistSettings, run) -> None:
        w = model.weights[0].detach()[:40].reshape(-1, 28, 28).numpy()
        image_grid(list(w), run.path("hidden_units.png"), suptitle="first-layer weights of 40 hidden units")


RECIPES = [Mnist(), Xor(), Symmetry()]
