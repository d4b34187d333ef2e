"""Generation speed: zupu GPT with its KV cache against `transformers` GPT2LMHeadModel.generate, side by side.

Both models are the same GPT-2-124M-shaped network with the same random weights (zupu's are loaded from
the folder `transformers` saved), fp32, greedy, a 16-token prompt, `--new` new tokens, batch 1 and 8. The
peers run interleaved, round after round, because the machine is shared and absolute times drift; the
table reports each side's best round and the median of the per-round speed ratios, by wall time and by the
process's CPU time (with --threads 1 the CPU time is the work done, which the other jobs on a shared machine
disturb far less than the wall time).

Batch 1 decoding reads every weight once per token, so its ceiling is the memory bandwidth:
    bound (tokens/s) = copy bandwidth (bytes/s) / bytes of weights read per token.
The copy bandwidth is measured here with a large tensor copy (read + write bytes / time).

    python benchmarks/gpt_generate.py [--new 64] [--rounds 3] [--threads 2] [--out benchmarks/RESULTS-gpt-generate.md]

Writes benchmarks/RESULTS-gpt-generate.md (or --out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from results import Run

import zupu


def copy_bandwidth(mib: int = 512, repeats: int = 5) -> float:
    """Bytes per second moved by `dst.copy_(src)` of a tensor far larger than any cache (read + write)."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * 4 / best


def weight_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of parameters one decoding step reads: all of them, except the position table, of which it
    reads one row (the token table is read whole, as the tied output layer)."""
    c = model.config
    return 4 * (model.num_params(non_embedding=False) - c.n_positions * c.n_embd + c.n_embd)


def time_zupu(model, prompt: torch.Tensor, new: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second of this process)."""
    t, c = time.perf_counter(), time.process_time()
    out = list(model.generate(prompt, new, temperature=0))
    assert len(out) == new
    return prompt.size(0) * new / (time.perf_counter() - t), prompt.size(0) * new / (time.process_time() - c)


def time_hf(hf, prompt: torch.Tensor, new: int) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new,
                      do_sample=False, pad_token_id=0, eos_token_id=None)
    assert out.size(1) == prompt.size(1) + new
    return prompt.size(0) * new / (time.perf_counter() - t), prompt.size(0) * new / (time.process_time() - c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new", type=int, default=64, help="new tokens per row")
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-gpt-generate.md"),
                   help="the RESULTS file to write")
    a = p.parse_args()
    run = Run(__file__)
    torch.set_num_threads(a.threads)
    import transformers

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(bos_token_id=None, eos_token_id=None)).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model = zupu.from_pretrained(d)
    prompt = torch.randint(0, 50257, (max(a.batches), a.prompt), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # same weights, same greedy tokens: a speed test of the same computation
        ours = torch.stack(list(model.generate(prompt[:1], 8, temperature=0)), 1)
        theirs = hf.generate(prompt[:1], attention_mask=torch.ones_like(prompt[:1]), max_new_tokens=8,
                             do_sample=False, pad_token_id=0, eos_token_id=None)[:, a.prompt:]
    assert torch.equal(ours, theirs), (ours, theirs)

    load0 = os.getloadavg()[0]
    bw = copy_bandwidth()
    per_token = weight_bytes_per_token(model)
    rows = []
    for b in a.batches:
        x = prompt[:b]
        time_zupu(model, x, 4), time_hf(hf, x, 4)  # warm-up
        z, h = [], []
        for _ in range(a.rounds):
            z.append(time_zupu(model, x, a.new))
            h.append(time_hf(hf, x, a.new))
            print(f"batch {b}: zupu {z[-1][0]:.1f} tok/s ({z[-1][1]:.1f} per CPU s), transformers {h[-1][0]:.1f} "
                  f"tok/s ({h[-1][1]:.1f} per CPU s), load {os.getloadavg()[0]:.1f}", flush=True)
        wall = statistics.median(zi[0] / hi[0] for zi, hi in zip(z, h, strict=True))
        cpu = statistics.median(zi[1] / hi[1] for zi, hi in zip(z, h, strict=True))
        rows.append((b, max(zi[0] for zi in z), max(hi[0] for hi in h), wall, cpu))
    bound = bw / per_token
    lines = [
        "# GPT generation: zupu (KV cache) vs transformers `generate`",
        "",
        f"GPT-2-124M shape, random weights, fp32, greedy, prompt {a.prompt}, {a.new} new tokens per row, "
        f"{a.threads} threads, {a.rounds} interleaved rounds; torch {torch.__version__}, "
        f"transformers {transformers.__version__}; load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} "
        "at the end.",
        "",
        "| batch | zupu tokens/s (best) | transformers generate tokens/s (best) | speed ratio, wall (median of rounds) "
        "| speed ratio, CPU time (median) |",
        "|---|---|---|---|---|",
        *[f"| {b} | {z:.1f} | {h:.1f} | {r:.2f}x | {c:.2f}x |" for b, z, h, r, c in rows],
        "",
        f"Memory-bandwidth bound at batch 1: {per_token / 1e6:.0f} MB of weights read per token, measured copy "
        f"bandwidth {bw / 1e9:.1f} GB/s -> at most {bound:.1f} tokens/s; zupu's batch 1 reaches "
        f"{rows[0][1] / bound:.0%} of it." if rows and rows[0][0] == 1 else "",
    ]
    text = "\n".join(lines)
    print(text)
    run.write(a.out, text)


if __name__ == "__main__":
    main()
