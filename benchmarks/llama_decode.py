"""SmolLM2-135M decoding and prefill speed: zupu's Llama against transformers' `generate`, on the same weights.

Both peers read the same GGUF (SmolLM2-135M-Instruct, Q4_1, dequantised to fp32): zupu through
`zupu.from_pretrained("smollm2")`, transformers through `AutoModelForCausalLM.from_pretrained(dir,
gguf_file=...)`. Greedy, a `--prompt`-token prompt, `--new` new tokens per row, batch 1 and 8; prefill is
one forward over a `--prefill`-token prompt. The peers run interleaved, round after round (the machine is
shared); the table gives each side's best round and the median of the per-round ratios. Before timing, the
two must produce the same greedy tokens. `--llama-cpp PATH` adds llama.cpp (llama-cpp-python built from
source, its package folder's parent at PATH) on the same GGUF, batch 1, its own quantised kernels.

    python benchmarks/llama_decode.py [--new 64] [--rounds 3] [--threads 2] [--llama-cpp PATH]

Writes benchmarks/RESULTS-llama.md (or --out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from results import Run

import zupu
from zupu import weights


def rate(fn, tokens: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second of this process) of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return tokens / (time.perf_counter() - t), tokens / (time.process_time() - c)


def decode_zupu(model, prompt: torch.Tensor, new: int) -> None:
    assert len(list(model.generate(prompt, new, temperature=0))) == new


def decode_hf(hf, prompt: torch.Tensor, new: int) -> None:
    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new,
                      do_sample=False, pad_token_id=2, eos_token_id=None)
    assert out.size(1) == prompt.size(1) + new


def rss_mib() -> float:
    """The process's resident memory now (Linux: /proc/self/statm's second field, in pages)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new", type=int, default=64, help="new tokens per row")
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens when decoding")
    p.add_argument("--prefill", type=int, default=256, help="prompt tokens of the prefill measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--llama-cpp", type=Path, help="folder holding a built llama_cpp package (llama-cpp-python)")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-llama.md"))
    a = p.parse_args()
    run = Run(__file__)
    torch.set_num_threads(a.threads)
    import transformers

    gguf = weights.fetch("smollm2")
    rss0 = rss_mib()
    model = zupu.from_pretrained("smollm2")
    rss_zupu = rss_mib() - rss0
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    rss_hf = rss_mib() - rss0 - rss_zupu
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(100, 49152, (max(a.batches), a.prompt), generator=g)
    long = torch.randint(100, 49152, (1, a.prefill), generator=g)
    with torch.no_grad():  # same weights, same greedy tokens: a speed test of the same computation
        ours = torch.stack(list(model.generate(prompt[:1], 16, temperature=0)), 1)
        theirs = hf.generate(prompt[:1], attention_mask=torch.ones_like(prompt[:1]), max_new_tokens=16,
                             do_sample=False, pad_token_id=2, eos_token_id=None)[:, a.prompt:]
    assert torch.equal(ours, theirs), (ours, theirs)

    load0 = os.getloadavg()[0]
    rows = []
    for b in a.batches:
        x = prompt[:b]
        decode_zupu(model, x, 4), decode_hf(hf, x, 4)  # warm-up
        z, h = [], []
        for _ in range(a.rounds):  # interleaved
            z.append(rate(lambda x=x: decode_zupu(model, x, a.new), b * a.new))
            h.append(rate(lambda x=x: decode_hf(hf, x, a.new), b * a.new))
        rows.append((f"decode, batch {b}", z, h))
        print(rows[-1][0], f"zupu {max(r[0] for r in z):.1f} tok/s, transformers {max(r[0] for r in h):.1f}",
              flush=True)
    with torch.no_grad():
        z, h = [], []
        for _ in range(a.rounds):
            z.append(rate(lambda: model(long, last_only=True), a.prefill))
            h.append(rate(lambda: hf(long, logits_to_keep=1), a.prefill))
    rows.append((f"prefill, {a.prefill} tokens", z, h))
    lines = [
        "# Llama (SmolLM2-135M) decoding and prefill: zupu vs transformers `generate`",
        "",
        f"SmolLM2-135M-Instruct from its Q4_1 GGUF, dequantised to fp32 by each peer; greedy; decode: prompt "
        f"{a.prompt}, {a.new} new tokens per row; {a.threads} threads; {a.rounds} rounds; torch {torch.__version__}, "
        f"transformers {transformers.__version__}; load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end. Greedy tokens equal before timing.",
        "",
        "| measurement | zupu tokens/s (best) | transformers tokens/s (best) | ratio, wall (median) "
        "| ratio, CPU time (median) |",
        "|---|---|---|---|---|",
    ]
    for name, z, h in rows:
        wall = statistics.median(zi[0] / hi[0] for zi, hi in zip(z, h, strict=True))
        cpu = statistics.median(zi[1] / hi[1] for zi, hi in zip(z, h, strict=True))
        lines.append(f"| {name} | {max(r[0] for r in z):.1f} | {max(r[0] for r in h):.1f} | {wall:.2f}x | {cpu:.2f}x |")
    weights_mib = sum(t.numel() for t in model.parameters()) * 4 / 2**20
    lines += ["", f"Memory: the resident set grew by {rss_zupu:.0f} MiB once zupu's model was loaded and by "
              f"{rss_hf:.0f} MiB more for transformers' (fp32 weights: {weights_mib:.0f} MiB). bfloat16 weights "
              "(`zupu.from_pretrained('smollm2', dtype=torch.bfloat16)`) decode faster, but their greedy tokens "
              "leave fp32's within 32 tokens, so the table is fp32."]
    if a.llama_cpp:
        sys.path.insert(0, str(a.llama_cpp))
        from llama_cpp import Llama as LlamaCpp

        cpp = LlamaCpp(str(gguf), n_threads=a.threads, n_ctx=512, verbose=False)
        tokens = prompt[0].tolist()

        def decode_cpp() -> None:
            cpp.reset()
            out = cpp.generate(tokens, temp=0.0)
            for _ in range(a.new):
                next(out)

        c = [rate(decode_cpp, a.new) for _ in range(a.rounds)]
        best_z = max(r[0] for r in rows[0][1])
        lines += ["", f"llama.cpp (llama-cpp-python at {a.llama_cpp}, its Q4_1 kernels), batch 1: "
                  f"{max(r[0] for r in c):.1f} tokens/s; zupu's fp32 batch 1 is {best_z / max(r[0] for r in c):.2f}x "
                  "of it."]
    text = "\n".join(lines)
    print(text)
    run.write(a.out, text)


if __name__ == "__main__":
    main()
