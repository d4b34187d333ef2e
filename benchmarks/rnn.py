"""The written-out LSTM beside torch.nn.LSTM, and the lstm / seq2seq-attention recipes' time and score.

    ZUPU_DATA_MIRROR=../shared/data python benchmarks/rnn.py [--repeats 5] [--recipes] [--quick]

Speed: forward + backward of one layer on the same input with the same weights, ours and torch's
alternating `repeats` times in this process; the table gives medians and the ours/torch time ratio
(absolute times on a shared 2-core machine are noise, ratios less so). With --recipes it also trains
each recipe (`--quick`: its quick settings) and reports seconds and the milestone.
Writes benchmarks/RESULTS-lstm-seq2seq.md (or --out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from results import Run

from zupu.nn.recurrent import LSTM

SHAPES = [  # (what it stands for, batch, steps, input, hidden)
    ("adding problem", 64, 100, 2, 64),
    ("seq2seq encoder", 64, 12, 128, 128),
    ("wider", 32, 50, 256, 256),
]


def time_layer(layer, x: torch.Tensor) -> float:
    t = time.perf_counter()
    out, _ = layer(x)
    out.sum().backward()
    return time.perf_counter() - t


def speed_rows(repeats: int) -> list[str]:
    rows = []
    for label, B, T, I, H in SHAPES:
        ours = LSTM(I, H)
        theirs = torch.nn.LSTM(I, H, batch_first=True)
        theirs.load_state_dict({f"{k}_l0": v for k, v in ours.state_dict().items()})
        x = torch.randn(B, T, I)
        time_layer(ours, x), time_layer(theirs, x)  # warm-up
        a, b = [], []
        for _ in range(repeats):
            a.append(time_layer(ours, x))
            b.append(time_layer(theirs, x))
        ma, mb = statistics.median(a), statistics.median(b)
        rows.append(f"| {label} | {B}x{T}x{I} -> {H} | {ma * 1e3:.1f} | {mb * 1e3:.1f} | {ma / mb:.2f} |")
        print(rows[-1], flush=True)
    return rows


def recipe_rows(quick: bool) -> list[str]:
    from zupu.train import launch

    rows = []
    for member in ("lstm", "seq2seq-attention"):
        with tempfile.TemporaryDirectory() as out:
            r = launch.train(member, out=Path(out), quick=quick)
        m, ms = r["metrics"], r["milestone"]
        extra = (f"RNN test MSE {m['rnn_test_mse']:.3f}" if member == "lstm" else
                 f"BLEU {m['bleu']:.1f} vs {m['baseline_bleu']:.1f}, chrF {m['chrf']:.1f} vs "
                 f"{m['baseline_chrf']:.1f} (attention vs none, beam); greedy BLEU {m['bleu_greedy']:.1f} "
                 f"vs {m['baseline_bleu_greedy']:.1f}")
        rows.append(f"| {member} | {r['recipe']}{' (quick)' if quick else ''} | {ms['name']} {ms['value']:.4g} "
                    f"{ms['op']} {ms['target']} ({'passed' if ms['passed'] else 'missed'}) | {extra} | "
                    f"{r['seconds']:.0f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--recipes", action="store_true", help="also train each recipe and report time and score")
    ap.add_argument("--quick", action="store_true", help="with --recipes: the quick settings")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the layer timings")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-lstm-seq2seq.md"),
                    help="the RESULTS file to write")
    args = ap.parse_args()
    run = Run(__file__)
    torch.set_num_threads(args.threads)
    lines = ["# LSTM and seq2seq-attention benchmarks", "",
             "Forward + backward of one LSTM layer, float32, same weights and input; median of "
             f"{args.repeats} alternating runs; {args.threads} torch thread(s).", "",
             "| shape | B x T x I -> H | zupu ms | torch.nn.LSTM ms | ratio zupu/torch |",
             "|---|---|---|---|---|", *speed_rows(args.repeats)]
    if args.recipes:
        lines += ["", "| member | recipe | milestone | detail | seconds |", "|---|---|---|---|---|",
                  *recipe_rows(args.quick)]
    run.write(args.out, "\n".join(lines), threads=args.threads)


if __name__ == "__main__":
    main()
