"""AlexNet's ingredients one at a time: each run is the alexnet recipe with one switch flipped.

    ZUPU_DATA_MIRROR=../shared/data OMP_NUM_THREADS=1 python benchmarks/alexnet_ablations.py \
        [--train-size 5000] [--epochs 3] [--target 0.80]

Runs are sized to finish on a shared 2-core machine: a subset of the Fashion-MNIST training set
(the first `--train-size` images), `--epochs` epochs, the full 10k test set, seed 0, one run per row.
Reports final test accuracy, train accuracy (10k un-augmented training images, dropout off), the
train-test gap, and the first epoch at which test accuracy reaches `--target` ("epochs to target").
Writes the table into benchmarks/RESULTS-lenet-alexnet.md (between markers) and
benchmarks/alexnet_ablations.png (test accuracy per epoch).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from zupu.train import launch  # noqa: E402

ROWS = [
    ("all ingredients (ReLU, LRN, overlapping pool, dropout, augmentation)", {}),
    ("tanh instead of ReLU", {"activation": "tanh"}),
    ("no dropout", {"dropout": 0.0}),
    ("no augmentation", {"shift": 0, "flip": False}),
    ("no LRN", {"lrn": False}),
    ("non-overlapping 2x2 pooling", {"pool_kernel": 2}),
]
RESULTS = Path(__file__).with_name("RESULTS-lenet-alexnet.md")
BEGIN, END = "<!-- ablations:begin -->", "<!-- ablations:end -->"


def replace_section(text: str, body: str) -> str:
    block = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        return text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    return text + ("\n" if text and not text.endswith("\n") else "") + block + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-size", type=int, default=5_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.80)
    args = ap.parse_args()
    lines, curves = [], {}
    for label, overrides in ROWS:
        settings = {"train_size": args.train_size, "epochs": args.epochs, **overrides}
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            result = launch.train("alexnet", "fashion-mnist", d, overrides=settings)
            seconds = time.perf_counter() - t
            history = [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]
        m = result["metrics"]
        points = [(r["step"], r["test_acc"]) for r in history if "test_acc" in r]
        per_epoch = points[-1][0] / args.epochs
        accs = [acc for step, acc in points if step > 0]
        reached = next((i + 1 for i, acc in enumerate(accs) if acc >= args.target), None)
        curves[label] = accs
        lines.append(f"| {label} | {m['test_acc']:.4f} | {m['train_acc']:.4f} | {m['generalisation_gap']:+.4f} | "
                     f"{reached if reached else f'> {args.epochs}'} | {seconds:.0f} s |")
        print(lines[-1], f"(steps per epoch {per_epoch:.0f})", flush=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, accs in curves.items():
        ax.plot(range(1, len(accs) + 1), accs, marker="o", label=label)
    ax.axhline(args.target, color="k", lw=0.5, ls=":")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"AlexNet ingredients on Fashion-MNIST ({args.train_size} train images)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.savefig(Path(__file__).with_name("alexnet_ablations.png"), dpi=110, bbox_inches="tight")
    body = (f"## AlexNet ablations\n\nFashion-MNIST, first {args.train_size} training images, {args.epochs} epochs, "
            "full 10k test set, one run (seed 0) per row; seed-to-seed spread was not measured, so treat "
            "small differences as noise. "
            f"Epochs to target: first epoch with test accuracy >= {args.target}. Figure: alexnet_ablations.png.\n\n"
            "| run | test acc | train acc | train - test gap | epochs to target | time |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(lines))
    RESULTS.write_text(replace_section(RESULTS.read_text() if RESULTS.exists() else "", body))


if __name__ == "__main__":
    main()
