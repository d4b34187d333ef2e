"""AlexNet's ingredients one at a time: each run is the alexnet recipe with one switch flipped.

    ZUPU_DATA_MIRROR=../shared/data OMP_NUM_THREADS=1 python benchmarks/alexnet_ablations.py \
        [--train-size 10000] [--validation 10000] [--epochs 4] [--seeds 2] [--rows 0,3,2]

Protocol: the choice between configurations is made on a validation split carved from the 60,000
training images (the last `--validation` of them; the recipe's `validation` setting), never on the test
set. Each row trains on the first `--train-size` of the remaining images for `--epochs` epochs, seeds
0..`--seeds`-1, and reports the mean over seeds of validation accuracy (and its spread, max - min, so that
an effect smaller than the seed noise reads as nil), train accuracy (10k un-augmented training images,
dropout off) and the train - validation gap. The row with the best mean validation accuracy is named;
test accuracy (full 10k) is printed beside every row only after that choice, and is not used for it.
Writes benchmarks/RESULTS-alexnet-ablations.md (or --out; stamped by benchmarks/results.py) and
alexnet_ablations.png beside it (validation accuracy per row). At the recipe's full budget (`--train-size 0
--epochs 12`: the 50,000 images left, ~25 minutes a run here) `--rows` picks the rows to compare.
"""

from __future__ import annotations

import argparse
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
    ("the recipe (ReLU, LRN, overlapping pool, dropout; no augmentation, the validation choice)", {}),
    ("tanh instead of ReLU", {"activation": "tanh"}),
    ("no dropout", {"dropout": 0.0}),
    ("with augmentation (shift 1, flip)", {"shift": 1, "flip": True}),
    ("no LRN", {"lrn": False}),
    ("non-overlapping 2x2 pooling", {"pool_kernel": 2}),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-size", type=int, default=10_000)
    ap.add_argument("--validation", type=int, default=10_000, help="training images held out for the choice")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rows", default=",".join(map(str, range(len(ROWS)))),
                    help=f"comma-separated indices into the table of switches (0-{len(ROWS) - 1}; 0: the recipe's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-alexnet-ablations.md"),
                    help="the RESULTS file to write")
    args = ap.parse_args()
    run = Run(__file__)
    try:
        picked = [ROWS[int(i)] for i in args.rows.split(",")]
    except (ValueError, IndexError):
        ap.error(f"--rows {args.rows!r}: give comma-separated indices from 0 to {len(ROWS) - 1}")
    n_train = args.train_size or 60_000 - args.validation  # 0: all the training images left
    rows = []
    for label, overrides in picked:
        settings = {"train_size": args.train_size, "validation": args.validation, "epochs": args.epochs, **overrides}
        runs, seconds = [], 0.0
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                runs.append(launch.train("alexnet", "fashion-mnist", d, seed=seed, overrides=settings)["metrics"])
                seconds += time.perf_counter() - t
        val = [m["val_acc"] for m in runs]
        mean = {k: statistics.fmean(m[k] for m in runs) for k in ("val_acc", "train_acc", "test_acc")}
        rows.append((label, mean, max(val) - min(val), seconds / args.seeds))
        print(label, mean, flush=True)
    chosen = max(rows, key=lambda r: r[1]["val_acc"])[0]
    lines = [f"| {label}{' (chosen)' if label == chosen else ''} | {m['val_acc']:.4f} | {spread:.4f} | "
             f"{m['train_acc']:.4f} | {m['train_acc'] - m['val_acc']:+.4f} | {m['test_acc']:.4f} | {s:.0f} s |"
             for label, m, spread, s in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh([r[0] for r in rows], [r[1]["val_acc"] for r in rows], xerr=[r[2] / 2 for r in rows])
    ax.set_xlim(min(r[1]["val_acc"] for r in rows) - 0.03, max(r[1]["val_acc"] for r in rows) + 0.02)
    ax.set_xlabel(f"validation accuracy ({args.validation} held-out training images; bar: spread over seeds)")
    ax.set_title(f"AlexNet ingredients on Fashion-MNIST ({n_train} train images, {args.epochs} epochs)")
    ax.tick_params(axis="y", labelsize=7)
    fig.savefig(args.out.with_name("alexnet_ablations.png"), dpi=110, bbox_inches="tight")
    body = (f"# AlexNet ablations\n\nThe recipe's settings with one switch flipped per row. Fashion-MNIST: the last "
            f"{args.validation} of the 60,000 training images are a validation split; each run trains on the first "
            f"{n_train} of the rest for {args.epochs} epochs; means over seeds 0-{args.seeds - 1}; 'spread' "
            "is max - min validation accuracy over the seeds: a difference between rows smaller than it is noise. "
            f"The choice (best mean validation accuracy): **{chosen}**. Test accuracy (full 10k test set) is shown "
            "after that choice and was not used for it. Time: per run. Figure: alexnet_ablations.png.\n\n"
            "| run | val acc | spread | train acc | train - val gap | test acc (not used to choose) | time |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(lines))
    run.write(args.out, body)


if __name__ == "__main__":
    main()
