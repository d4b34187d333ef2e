"""GPT training against nanoGPT and Hugging Face, side by side on the same CPU.

    ZUPU_DATA_MIRROR=../shared/data python benchmarks/gpt_train.py /path/to/nanoGPT [--repeats 2]

`/path/to/nanoGPT` is a checkout of github.com/karpathy/nanoGPT, kept outside this repository; this
script only runs it (its `data/shakespeare_char/prepare.py`, then `train.py` with the CPU configuration
of its README) and reads what it prints.

Two measurements, each run alternately so that both sides see the same machine load:
1. Time to nanoGPT's final validation loss: nanoGPT's CPU run (4 layers, 4 heads, 128 wide, block 64,
   batch 12, 2000 iterations, no dropout) against `zupu train gpt --recipe shakespeare-char` in three
   arms, so that a reader sees what the optimiser and the precision each bring: the recipe as shipped
   (Muon, batch 32, 300 steps, bf16 where the CPU has it natively), the recipe in float32, and AdamW in
   float32 at nanoGPT's own batch, steps and schedule (the same algorithm as nanoGPT). Each run is a
   fresh process with 2 threads, wall time from start to exit (nanoGPT's prepare.py, run once before,
   is not counted; zupu's tokenising is); CPU seconds beside it, which a busy machine inflates less.
2. Training-step throughput at nanoGPT's batch and the recipe's: tokens/s and model FLOP/s (6N +
   attention per token) for zupu's GPT, nanoGPT's `model.GPT` and `transformers.GPT2LMHeadModel`, each
   with fused AdamW in float32, and for the recipe's own step (its Trainer, workers, precision, optimiser
   and clipping), against the sgemm rate measured around each (a 2048 x 2048 float32 matmul, the CPU's
   best case); a bfloat16 recipe step also against the bf16 GEMM rate measured the same way. Both sides
   are medians of single timings (steps; matmuls): single timings on this shared VM swing by 10-30%,
   and a median of each compares like with like. Every model runs with zupu's Trainer's malloc settings
   (`keep_freed_memory`), which spare ~10% of a step's time in page faults.

Writes benchmarks/RESULTS-gpt-train.md (or --results), stamped by benchmarks/results.py. The machine is shared:
the table names the load average seen during each measurement, and the comparisons are ratios of runs
made one after the other.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from results import Run

from zupu.recipes.gpt import CharSettings, make_optimizer, train_step
from zupu.train.precision import resolve as resolve_precision
from zupu.train.threads import keep_freed_memory

HERE = Path(__file__).resolve().parent
NANOGPT_CPU = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
               "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
               "--lr_decay_iters=2000", "--dropout=0.0"]  # nanoGPT README, "I only have a macbook"
THREADS = 2
# section 1's zupu arms: recipe overrides (`--set` adds to every arm)
ARMS = {
    "the recipe": [],
    "the recipe in fp32": ["precision=fp32"],
    "AdamW, fp32, nanoGPT's batch/steps/schedule": [
        "optimizer=adamw", "precision=fp32", "batch_size=12", "steps=2000", "lr=1e-3", "warmup=100",
        "schedule=cosine", "min_lr_factor=0.1", "beta2=0.99"],  # nanoGPT's train_shakespeare_char + CPU flags
}


def load() -> float:
    return os.getloadavg()[0]


def env2() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}


def sgemm_gflops(n: int = 2048, seconds: float = 3.0, dtype: torch.dtype = torch.float32) -> list[float]:
    """Rates (GFLOP/s) of n x n matmuls (float32: sgemm) on THREADS threads, one per matmul, for `seconds`."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    rates, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return rates


# -- 1. time to nanoGPT's loss ---------------------------------------------------------------------

def prepare_nanogpt(nanogpt: Path) -> None:
    from zupu import data

    folder = nanogpt / "data" / "shakespeare_char"
    (folder / "input.txt").write_text(data.load("tinyshakespeare"), encoding="utf-8")  # the mirror's copy
    subprocess.run([sys.executable, "prepare.py"], cwd=folder, check=True, capture_output=True)


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_nanogpt(nanogpt: Path, out: Path) -> dict:
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", *NANOGPT_CPU, f"--out_dir={out}"]
    start, load0, cpu0 = time.perf_counter(), load(), child_cpu()
    proc = subprocess.run(cmd, cwd=nanogpt, env=env2(), capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, child_cpu() - cpu0
    if proc.returncode:
        raise SystemExit(f"nanoGPT failed:\n{proc.stderr[-3000:]}")
    curve = {int(s): float(v) for s, v in re.findall(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", proc.stdout)}
    return {"seconds": seconds, "cpu": cpu, "val_loss": curve[max(curve)], "curve": curve, "load": (load0 + load()) / 2}


def run_zupu(out: Path, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "zupu", "train", "gpt", "--recipe", "shakespeare-char", "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    start, load0, cpu0 = time.perf_counter(), load(), child_cpu()
    proc = subprocess.run(cmd, env=env2(), capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, child_cpu() - cpu0
    if proc.returncode:
        raise SystemExit(f"zupu failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    return {"seconds": seconds, "cpu": cpu, "val_loss": metrics["val_loss"],
            "tokens_per_s": metrics["train_tokens_per_s"], "load": (load0 + load()) / 2}


# -- 2. training-step throughput -----------------------------------------------------------------

def zupu_model(vocab: int, block: int):
    """The shakespeare-char recipe's model (its settings, so the two cannot drift apart) at `block`."""
    from zupu.models.gpt import GPT, GPTConfig

    s = CharSettings()
    return GPT(GPTConfig(vocab_size=vocab, n_positions=block, n_embd=s.n_embd, n_layer=s.n_layer, n_head=s.n_head,
                         activation_function=s.activation, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def nanogpt_model(nanogpt: Path, vocab: int, block: int):
    sys.path.insert(0, str(nanogpt))
    try:
        import model as nanogpt_model_py  # nanoGPT's model.py
    finally:
        sys.path.pop(0)
    return nanogpt_model_py.GPT(nanogpt_model_py.GPTConfig(block_size=block, vocab_size=vocab, n_layer=4, n_head=4,
                                                           n_embd=128, dropout=0.0, bias=True))


def hf_model(vocab: int, block: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab, n_positions=block, n_embd=128, n_layer=4, n_head=4, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")
    return GPT2LMHeadModel(cfg)


def flops_per_token(model: torch.nn.Module, block: int, n_layer: int = 4, n_embd: int = 128) -> float:
    """6N (non-embedding weights, the tied output layer's matrix counted: it is a matmul every token)
    + 12 * n_layer * T * n_embd for attention, the same count for all three models."""
    seen, n = set(), 0
    for name, p in model.named_parameters():
        if id(p) in seen or "wpe" in name or "position" in name:
            continue
        seen.add(id(p))
        n += p.numel()
    return 6 * n + 12 * n_layer * block * n_embd


def step_rate(kind: str, model: torch.nn.Module, batch: int, block: int, vocab: int, seconds: float) -> float:
    """Median training tokens/s of single steps (forward + backward + optimiser) at (batch, block), after 3
    warm-up steps: fused AdamW on one batch for the models as they come, or, for "zupu-recipe", the
    recipe's own step (its Trainer with the recipe's workers, Muon + AdamW, gradient clipping)."""
    x = torch.randint(vocab, (batch, block))
    y = torch.randint(vocab, (batch, block))
    if kind == "zupu-recipe":
        from zupu.train.trainer import Trainer

        s = CharSettings()
        opt = make_optimizer(model, s)
        ends: list[float] = []

        def steps(n: int) -> None:
            Trainer(model, train_step(model, s), lambda i: (x, y), opt, n, grad_clip=s.grad_clip,
                    log_every=10**9, callbacks=(lambda step, t: ends.append(time.perf_counter()),),
                    workers=s.workers or torch.get_num_threads()).fit()  # 0: one per thread, as the recipe

        start = time.perf_counter()
        steps(4)
        n = max(5, round(seconds / ((time.perf_counter() - start) / 4)))
        ends.clear()
        steps(n)
        return batch * block / statistics.median(b - a for a, b in itertools.pairwise(ends))

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)

    def step():
        if kind == "nanogpt":
            _, loss = model(x, y)
        elif kind == "hf":
            logits = model(input_ids=x).logits
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        else:
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return batch * block / statistics.median(times)


def throughput(nanogpt: Path, batch: int, block: int, vocab: int, repeats: int, seconds: float) -> list[dict]:
    makers = {"zupu": lambda: zupu_model(vocab, block),
              "zupu, the recipe's step": lambda: zupu_model(vocab, block),
              "nanoGPT": lambda: nanogpt_model(nanogpt, vocab, block)}
    try:
        import transformers  # noqa: F401

        makers["HF GPT2LMHeadModel"] = lambda: hf_model(vocab, block)
    except ImportError:
        print("transformers is not installed: the HF column is left out", file=sys.stderr)
    rows = {name: {"tps": [], "frac": [], "frac16": []} for name in makers}
    bf16 = resolve_precision(CharSettings().precision) == "bf16"  # "auto": what this CPU does natively
    for _ in range(repeats):
        for name, make in makers.items():
            torch.manual_seed(0)
            model = make()
            kind = ("nanogpt" if name == "nanoGPT" else "hf" if name.startswith("HF") else
                    "zupu-recipe" if "recipe" in name else "zupu")
            before = sgemm_gflops(seconds=1.5)
            tps = step_rate(kind, model, batch, block, vocab, seconds)
            sgemm = statistics.median(before + sgemm_gflops(seconds=1.5))
            rows[name]["tps"].append(tps)
            rows[name]["frac"].append(tps * flops_per_token(model, block) / 1e9 / sgemm)
            rows[name]["flops"] = flops_per_token(model, block)
            print(f"  {name} batch {batch}: {tps:.0f} tokens/s, {rows[name]['frac'][-1]:.0%} of sgemm "
                  f"({sgemm:.1f} GFLOP/s), load {load():.1f}", flush=True)
            if kind == "zupu-recipe" and bf16:  # its matmuls run in bfloat16: the bf16 GEMM rate is its ceiling
                gemm16 = statistics.median(sgemm_gflops(seconds=1.5, dtype=torch.bfloat16))
                rows[name]["frac16"].append(tps * flops_per_token(model, block) / 1e9 / gemm16)
                print(f"    {rows[name]['frac16'][-1]:.0%} of the bf16 GEMM rate ({gemm16:.1f} GFLOP/s)", flush=True)
    return [{"name": n, "tps": statistics.median(r["tps"]), "frac": statistics.median(r["frac"]),
             "frac16": statistics.median(r["frac16"]) if r["frac16"] else None, "flops": r["flops"]}
            for n, r in rows.items()]


def main() -> None:
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("nanogpt", type=Path, help="a checkout of github.com/karpathy/nanoGPT (outside this repo)")
    ap.add_argument("--repeats", type=int, default=2, help="nanoGPT/zupu run pairs (alternating)")
    ap.add_argument("--step-seconds", type=float, default=8.0, help="seconds per throughput measurement")
    ap.add_argument("--skip-runs", action="store_true", help="only the step throughput table")
    ap.add_argument("--skip-throughput", action="store_true", help="only the time-to-loss pairs")
    ap.add_argument("--set", action="append", default=[], help="zupu recipe overrides, key=value")
    ap.add_argument("--threads", type=int, default=THREADS, help="threads for every run (default 2)")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS-gpt-train.md")
    args = ap.parse_args()
    run = Run(__file__)
    THREADS = args.threads
    torch.set_num_threads(THREADS)
    keep_freed_memory()
    nanogpt = args.nanogpt.resolve()
    if not (nanogpt / "train.py").exists() or not (nanogpt / "model.py").exists():
        raise SystemExit(f"{nanogpt} is not a nanoGPT checkout (no train.py/model.py)")
    prepare_nanogpt(nanogpt)
    vocab = 65

    lines = ["# GPT training: zupu vs nanoGPT vs HF transformers", "",
             f"Machine: {os.cpu_count()} CPUs, shared with other work; {THREADS} threads for every run. "
             f"torch {torch.__version__}. Run `python benchmarks/gpt_train.py NANOGPT_CHECKOUT`.", ""]
    pairs = []
    if not args.skip_runs:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeats):
                print(f"pair {i + 1}/{args.repeats}", flush=True)
                order = [("nanoGPT", lambda out=Path(tmp) / f"nano{i}": run_nanogpt(nanogpt, out))]
                order += [(arm, lambda out=Path(tmp) / f"zupu{i}-{j}", sets=sets: run_zupu(out, sets + args.set))
                          for j, (arm, sets) in enumerate(ARMS.items())]
                if i % 2 == 0:
                    order.reverse()  # alternate who goes first, so a load trend hits both sides
                pair = {}
                for name, fn in order:
                    pair[name] = fn()
                    print(f"  {name}: {pair[name]['seconds']:.1f} s ({pair[name]['cpu']:.1f} s of CPU), val loss "
                          f"{pair[name]['val_loss']:.4f}, load {pair[name]['load']:.1f}", flush=True)
                pairs.append(pair)
        lines += ["## 1. Time to nanoGPT's final validation loss (tiny Shakespeare, characters)", "",
                  "| pair | run | settings | s (CPU s) | val loss | time / nanoGPT's (CPU time) | load |",
                  "|---|---|---|---|---|---|---|"]
        for i, p in enumerate(pairs):
            n = p["nanoGPT"]
            for name in ("nanoGPT", *ARMS):
                r = p[name]
                sets = "nanoGPT's CPU flags" if name == "nanoGPT" else " ".join(ARMS[name] + args.set) or "as shipped"
                lines.append(f"| {i + 1} | {name} | {sets} | {r['seconds']:.1f} ({r['cpu']:.1f}) | {r['val_loss']:.4f} "
                             f"| {r['seconds'] / n['seconds']:.2f} ({r['cpu'] / n['cpu']:.2f}) | {r['load']:.1f} |")
        precision = resolve_precision(CharSettings().precision)
        lines.append("")
        for arm in ARMS:
            ratio = statistics.median(p[arm]["seconds"] / p["nanoGPT"]["seconds"] for p in pairs)
            cpu = statistics.median(p[arm]["cpu"] / p["nanoGPT"]["cpu"] for p in pairs)
            print(f"{arm}: time / nanoGPT's {ratio:.2f} (CPU {cpu:.2f})", flush=True)
            lines.append(f"- {arm}: median time / nanoGPT's **{ratio:.2f}** (CPU time {cpu:.2f})"
                         + (f"; \"auto\" precision resolved to {precision} on this CPU" if arm == "the recipe" else ""))
        lines += ["", "Target for the recipe: <= 0.5 of nanoGPT's time. nanoGPT's val loss "
                  "is its own estimate (20 random batches of 12 x 64); zupu's is the whole validation split (111,540 "
                  "characters, windows of 64).", "",
                  "nanoGPT's val curve (last pair): " + ", ".join(f"{k}: {v:.4f}" for k, v in
                                                                  sorted(pairs[-1]["nanoGPT"]["curve"].items())), ""]

    if not args.skip_throughput:
        lines += ["## 2. Training-step throughput (forward + backward + optimiser step, 4 x 128, block 64)", "",
                  "Fused AdamW in float32 for every model, and zupu once more with its recipe's step (Trainer and "
                  "its workers, bfloat16 autocast if the recipe's precision says so, Muon + AdamW, clipping), "
                  "whose fraction is also given against the bf16 GEMM rate (2048^2 bfloat16 matmuls, "
                  "measured the same way). Model FLOPs per "
                  "token = 6 x (non-embedding weights + the tied output matrix) + 12 x layers x block x width "
                  "(attention), the same count for every model (Muon's own matmuls are not counted); the "
                  "fraction is the median step's model FLOP/s over the median sgemm rate (2048^2 float32 "
                  "matmuls) measured right before and after each measurement.", ""]
    for batch in () if args.skip_throughput else (12, CharSettings().batch_size):  # nanoGPT's, the recipe's
        print(f"throughput, batch {batch}", flush=True)
        rows = throughput(nanogpt, batch, 64, vocab, repeats=2, seconds=args.step_seconds)
        zupu = next(r for r in rows if r["name"] == "zupu")
        lines += [f"batch {batch} (load {load():.1f}):", "",
                  "| model | precision | tokens/s | of its precision's GEMM rate | of sgemm rate | zupu speed-up |",
                  "|---|---|---|---|---|---|"]
        # a bf16 step is judged first against the bf16 GEMM rate (its ceiling), then against sgemm
        lines += [f"| {r['name']} | {'fp32' if r['frac16'] is None else 'bf16'} | {r['tps']:.0f} | "
                  f"{format(r['frac'] if r['frac16'] is None else r['frac16'], '.0%')} | {r['frac']:.0%} | "
                  f"{zupu['tps'] / r['tps']:.2f}x |" for r in rows]
        lines.append("")
    print("\n".join(lines))
    run.write(args.results, "\n".join(lines), threads=THREADS)


if __name__ == "__main__":
    main()
