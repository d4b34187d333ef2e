"""AlexNet's ingredients one at a time: each run is the alexnet recipe with one switch flipped.

    ZUPU_DATA_MIRROR=../shared/data OMP_NUM_THREADS=1 python benchmarks/alexnet_ablations.py \
        [--train-size 10000] [--epochs 4] [--seeds 2] [--target 0.80]

Runs are sized to finish on a shared 2-core machine: a subset of the Fashion-MNIST training set
(the first `--train-size` images), `--epochs` epochs, the full 10k test set, seeds 0..`--seeds`-1 per
row. Reports the mean over seeds (and the spread, max - min, of test accuracy, so that an effect
smaller than the seed noise reads as nil) of final test accuracy, train accuracy (10k un-augmented
training images, dropout off), the train-test gap, and the first epoch at which the mean test
accuracy reaches `--target` ("epochs to target").
Writes benchmarks/RESULTS-alexnet-ablations.md (or --out; stamped by benchmarks/results.py) and
alexnet_ablations.png beside it (test accuracy per epoch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from results import Run  # noqa: E402

from zupu.train import launch  # noqa: E402

ROWS = [
    ("all ingredients (ReLU, LRN, overlapping pool, dropout, augmentation)", {}),
    ("tanh instead of ReLU", {"activation": "tanh"}),
    ("no dropout", {"dropout": 0.0}),
    ("no augmentation", {"shift": 0, "flip": False}),
    ("no LRN", {"lrn": False}),
    ("non-overlapping 2x2 pooling", {"pool_kernel": 2}),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-size", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--target", type=float, default=0.80)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-alexnet-ablations.md"),
                    help="the RESULTS file to write")
    args = ap.parse_args()
    run = Run(__file__)
    lines, curves = [], {}
    for label, overrides in ROWS:
        settings = {"train_size": args.train_size, "epochs": args.epochs, **overrides}
        runs, per_epoch_accs, seconds = [], [], 0.0
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                runs.append(launch.train("alexnet", "fashion-mnist", d, seed=seed, overrides=settings)["metrics"])
                seconds += time.perf_counter() - t
                history = [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]
            per_epoch_accs.append([r["test_acc"] for r in history if "test_acc" in r and r["step"] > 0])
        accs = [statistics.fmean(epoch) for epoch in zip(*per_epoch_accs, strict=True)]  # mean curve over seeds
        reached = next((i + 1 for i, acc in enumerate(accs) if acc >= args.target), None)
        curves[label] = accs
        test = [m["test_acc"] for m in runs]
        mean = {k: statistics.fmean(m[k] for m in runs) for k in ("test_acc", "train_acc", "generalisation_gap")}
        lines.append(f"| {label} | {mean['test_acc']:.4f} | {max(test) - min(test):.4f} | {mean['train_acc']:.4f} | "
                     f"{mean['generalisation_gap']:+.4f} | {reached if reached else f'> {args.epochs}'} | "
                     f"{' / '.join(f'{a:.3f}' for a in accs)} | "
                     f"{seconds / args.seeds:.0f} s |")
        print(lines[-1], flush=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, accs in curves.items():
        ax.plot(range(1, len(accs) + 1), accs, marker="o", label=label)
    ax.axhline(args.target, color="k", lw=0.5, ls=":")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"AlexNet ingredients on Fashion-MNIST ({args.train_size} train images)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.savefig(args.out.with_name("alexnet_ablations.png"), dpi=110, bbox_inches="tight")
    body = (f"# AlexNet ablations\n\nThe recipe's settings with one switch flipped per row. Fashion-MNIST, first "
            f"{args.train_size} training images, {args.epochs} epochs, full 10k test set, means over seeds "
            f"0-{args.seeds - 1}; 'spread' is max - min test accuracy over the seeds: a difference between rows "
            "smaller than it is noise. Epochs to target: first epoch with mean test accuracy >= "
            f"{args.target}. Time: per run. Figure: alexnet_ablations.png.\n\n"
            "| run | test acc | spread | train acc | train - test gap | epochs to target | acc per epoch | time |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(lines))
    run.write(args.out, body)


if __name__ == "__main__":
    main()
