"""LeNet and AlexNet recipes beside the PyTorch-example MNIST CNN, plus what makes them fast here.

    ZUPU_DATA_MIRROR=../shared/data python benchmarks/cnn.py [--full] [--threads 1] [--skip-speed]

The peer is the network of pytorch/examples' mnist/main.py, written here from its description:
conv 3x3 1->32, ReLU, conv 3x3 32->64, ReLU, 2x2 max-pool, dropout 0.25, linear 9216->128, ReLU,
dropout 0.5, linear 128->10, log-softmax + NLL; Adadelta lr 1.0 with StepLR(gamma 0.7) per epoch,
batch 64, inputs normalised with mean 0.1307 / std 0.3081 (the dataset's own for Fashion-MNIST).
It trains on the same training images for the same number of epochs as each zupu recipe, and both
run alternately in this process with the same thread count. By default the recipes' quick settings
are used (what `zupu tour --quick` runs); --full runs the recipes' full settings.

The speed section measures training images/s for channels_last on/off, batch size and thread count.
Writes benchmarks/RESULTS-lenet-alexnet.md (or --out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from results import Run
from torch import nn

from zupu import registry
from zupu.train import launch


class ExampleCNN(nn.Module):
    """pytorch/examples mnist/main.py's Net, from its description."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)  # (N, 64, 12, 12)
        x = F.dropout(x, 0.25, self.training).flatten(1)  # (N, 9216)
        x = F.dropout(F.relu(self.fc1(x)), 0.5, self.training)
        return F.log_softmax(self.fc2(x), 1)


def peer(xtr, ytr, xte, yte, epochs: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    mean, std = xtr.mean(), xtr.std()
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    model = ExampleCNN()
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.7)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xtr)).split(64):
            opt.zero_grad()
            F.nll_loss(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        return sum((model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
                   for i in range(0, len(xte), 1000)) / len(xte)


def mnist28():
    from zupu import data
    from zupu.data.transforms import images

    m = data.load("mnist")
    return (images(m["train"].x)[:, None], torch.from_numpy(m["train"].y),
            images(m["test"].x)[:, None], torch.from_numpy(m["test"].y))


def fashion28(train_size: int):
    from zupu import data
    from zupu.data.transforms import images

    f = data.load("fashion-mnist")
    n = train_size or len(f["train"].y)
    return (images(f["train"].x[:n])[:, None], torch.from_numpy(f["train"].y[:n]),
            images(f["test"].x)[:, None], torch.from_numpy(f["test"].y))


def compare(full: bool) -> str:
    rows = []
    for member, recipe, peer_data in (("lenet", "lenet5-mnist", lambda s: mnist28()),
                                       ("lenet", "lenet1989-mnist16", lambda s: mnist28()),
                                       ("alexnet", "fashion-mnist", lambda s: fashion28(s.train_size))):
        r = registry.get(member).recipe(recipe)
        s = r.settings(quick=not full)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            result = launch.train(member, recipe, d, quick=not full)
            ours_t = time.perf_counter() - t
        ours = result["metrics"]["test_acc"]
        t = time.perf_counter()
        theirs = peer(*peer_data(s), epochs=s.epochs)
        peer_t = time.perf_counter() - t
        rows.append(f"| {member} {recipe} | {s.epochs} | {ours:.4f} | {ours_t:.0f} s | {theirs:.4f} | {peer_t:.0f} s "
                    f"| {ours_t / peer_t:.2f} |")
        print(rows[-1], flush=True)
    return ("| zupu recipe | epochs | test acc | time | PyTorch-example CNN acc | its time | time ratio zupu/peer |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def images_per_second(model: nn.Module, shape, batch: int, channels_last: bool, steps: int = 6) -> float:
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for i in range(steps + 1):
        if i == 1:
            t = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t)


def speed() -> str:
    from zupu.models.alexnet import AlexNet, AlexNetConfig
    from zupu.models.lenet import LeNet5, LeNet5Config

    rows = []
    before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (32, 128, 256):
            for cl in (False, True):
                a = images_per_second(AlexNet(AlexNetConfig()), (1, 28, 28), batch, cl)
                b = images_per_second(LeNet5(LeNet5Config(output="linear")), (1, 32, 32), batch, cl)
                rows.append(f"| {threads} | {batch} | {'yes' if cl else 'no'} | {a:.0f} | {b:.0f} |")
                print(rows[-1], flush=True)
    torch.set_num_threads(before)
    return ("| threads | batch | channels_last | AlexNet-small img/s | LeNet-5 img/s |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="the recipes' full settings instead of quick")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-lenet-alexnet.md"),
                    help="the RESULTS file to write")
    args = ap.parse_args()
    run = Run(__file__)
    torch.set_num_threads(args.threads)
    parts = []
    if not args.skip_speed:
        parts.append("## Training speed (images/s, one training step, random data)\n\n"
                     "Measured on the shared 2-core machine while other jobs ran: compare within a column.\n\n"
                     + speed())
    parts.append(f"## Recipes vs the PyTorch-example CNN ({'full' if args.full else 'quick'} settings, "
                 f"{args.threads} thread(s))\n\nSame training images and epochs for both; one run each, "
                 "alternating; times include zupu's per-epoch evaluation and checkpoints.\n\n" + compare(args.full))
    run.write(args.out, "# LeNet and AlexNet beside the PyTorch-example CNN\n\n" + "\n\n".join(parts),
              threads=args.threads)


if __name__ == "__main__":
    main()
