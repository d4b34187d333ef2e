"""ViT vs a LeNet-5-shaped CNN vs an MLP, on the same images, at several training-set sizes.

    ZUPU_DATA_MIRROR=../shared/data python benchmarks/vit_vs_cnn.py [--dataset mnist] [--sizes 500,1000,5000]

Dosovitskiy et al. (2020, section 4.2 and fig. 3) found that a ViT, lacking the CNN's built-in
locality and translation equivariance, loses to a ResNet when pre-trained on little data and wins
only with a lot. This runs the small-data end of that curve on digits: all three models get the
same inputs, the same optimiser (AdamW, cosine schedule with warm-up, label smoothing 0.1), the same
random-shift augmentation and the same number of optimisation steps at every size, so the only
difference is the architecture's prior. Accuracy is on the full 10,000-image test set.

The CNN is LeNet-5's shape (conv 5x5x6, pool, conv 5x5x16, pool, 120, 84, 10) with ReLU and max
pooling; the MLP is 784-256-256-10 with ReLU. Both are defined here, not the lenet/backprop-mlp members,
so that the three differ only in architecture. Writes benchmarks/RESULTS-vit.md (or --out) after each size,
stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from results import Run
from torch import nn

from zupu.recipes.vit import Mnist, Settings, accuracy, fit_classifier, image_tensors


def lenet5() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 6, 14, 14)
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 5, 5)
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--sizes", default="500,1000,5000")
    p.add_argument("--steps", type=int, default=1500, help="optimisation steps for every model and size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-vit.md")))
    args = p.parse_args()
    run = Run(__file__)
    torch.set_num_threads(1)  # one thread: on a shared, busy machine, 2 threads spin and run slower

    base = Settings()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        xtr, ytr, xte, yte = image_tensors(args.dataset, n)
        steps_per_epoch = n // min(base.batch_size, n)
        epochs = max(1, round(args.steps / steps_per_epoch))
        s = dataclasses.replace(base, train_size=n, epochs=epochs, warmup_epochs=max(1, epochs // 20))
        row = {"size": n, "epochs": epochs}
        builders = {"ViT": lambda s=s: Mnist().build(s), "LeNet-5 shape CNN": lenet5, "MLP": mlp}
        for name, build in builders.items():
            torch.manual_seed(args.seed)
            model = build()
            t = time.process_time()
            fit_classifier(model, xtr, ytr, xte, yte, s, args.seed, desc=f"{name} n={n}")
            row[name] = (accuracy(model, xte, yte), time.process_time() - t, sum(q.numel() for q in model.parameters()))
            print(n, name, row[name], flush=True)
        rows.append(row)
        write(run, rows, args, s)


def write(run: Run, rows: list[dict], args, s: Settings) -> None:
    names = ["ViT", "LeNet-5 shape CNN", "MLP"]
    lines = [
        f"# ViT vs CNN vs MLP on {args.dataset}: test accuracy by training-set size",
        "",
        f"Seed {args.seed}. Same optimiser, schedule, augmentation (random shifts of up to {s.shift} px), "
        f"label smoothing and about {args.steps} steps of batch {s.batch_size} for every model; test set: "
        "all 10,000 test images. CPU seconds are process time on one thread of a shared machine: compare "
        "them within a row, not across runs.",
        "",
        "| train images | epochs | " + " | ".join(f"{n} acc" for n in names) + " | ViT - CNN | "
        + " | ".join(f"{n} CPU s" for n in names) + " |",
        "|---:|---:|" + "---:|" * (2 * len(names) + 1),
    ]
    for r in rows:
        accs = " | ".join(f"{r[n][0]:.2%}" for n in names)
        secs = " | ".join(f"{r[n][1]:.0f}" for n in names)
        gap = (r["ViT"][0] - r["LeNet-5 shape CNN"][0]) * 100
        lines.append(f"| {r['size']:,} | {r['epochs']} | {accs} | {gap:+.1f} pts | {secs} |")
    lines += ["", "Parameters: " + ", ".join(f"{n} {rows[0][n][2]:,}" for n in names) + "."]
    run.write(args.out, "\n".join(lines), threads=1)


if __name__ == "__main__":
    main()
