"""First generation vs scikit-learn, side by side on the same split: accuracy and time ratio.

    ZUPU_DATA_MIRROR=../shared/data python benchmarks/first_generation.py [--repeats 3]

Each pair runs alternately `repeats` times in this process; the table reports medians and the
zupu/peer time ratio (absolute times on a shared 2-core machine are noise, ratios less so).
Writes benchmarks/RESULTS-first-generation.md (or --out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from results import Run

from zupu.train import launch


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def sklearn_perceptron(xtr, ytr, xte, yte, epochs):
    from sklearn.linear_model import Perceptron

    return Perceptron(max_iter=epochs, tol=None, random_state=0).fit(xtr, ytr).score(xte, yte)


def sklearn_mlp(xtr, ytr, xte, yte, epochs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier((128,), max_iter=epochs, random_state=0).fit(xtr, ytr).score(xte, yte)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-first-generation.md"),
                    help="the RESULTS file to write")
    args = ap.parse_args()
    run = Run(__file__)
    from zupu.recipes.backprop_mlp import MnistSettings, mnist_tensors
    from zupu.recipes.perceptron import Digits, ImageSettings

    pairs = [
        ("perceptron digits-14x14", "perceptron", "digits-14x14", ImageSettings().epochs,
         lambda e: sklearn_perceptron(*(t.numpy() for t in Digits().data(ImageSettings())), e),
         "sklearn Perceptron"),
        ("backprop-mlp mnist", "backprop-mlp", "mnist", MnistSettings().epochs,
         lambda e: sklearn_mlp(*(t.numpy() for t in mnist_tensors()), e), "sklearn MLPClassifier"),
    ]
    rows = []
    for label, member, recipe, epochs, peer, peer_name in pairs:
        ours, theirs = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as d:
                result, t = timed(lambda d=d: launch.train(member, recipe, d))  # noqa: B023
            ours.append((result["milestone"]["value"], t))
            theirs.append(timed(lambda: peer(epochs)))  # noqa: B023
        acc, t = statistics.median(a for a, _ in ours), statistics.median(t for _, t in ours)
        pacc, pt = statistics.median(a for a, _ in theirs), statistics.median(t for _, t in theirs)
        rows.append(f"| {label} | {acc:.4f} | {t:.1f} s | {peer_name} | {pacc:.4f} | {pt:.1f} s | {t / pt:.2f} |")
        print(rows[-1], flush=True)
    table = ("| zupu recipe | test acc | time | peer | peer acc | peer time | time ratio zupu/peer |\n"
             "|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    note = (f"# First generation vs scikit-learn\n\nSame split (MNIST 5k train / 10k test), same epochs, "
            f"median of {args.repeats} alternating runs on this 2-core machine. zupu's time includes its "
            "per-epoch evaluation, checkpoints and plots; the peers only fit and score.\n\n")
    run.write(args.out, note + table)


if __name__ == "__main__":
    main()
