"""SmolLM2-135M decoding and prefill speed: zupu's Llama against transformers' `generate`, on the same weights.

Both peers read the same GGUF (SmolLM2-135M-Instruct, Q4_1): zupu through `zupu.from_pretrained("smollm2")`
(fp32, dequantised), with `quantize="int4"` (the file's 4-bit blocks) and with `dtype=torch.bfloat16`;
transformers through `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)` (fp32).
Greedy, a `--prompt`-token prompt, `--new` new tokens per row, batch 1 and 8; prefill is
one forward over a `--prefill`-token prompt. The peers run interleaved, round after round (the machine is
shared); the table gives each side's best round and the median of the per-round ratios. Before timing, zupu
fp32 and transformers must produce the same greedy tokens; int4's and bf16's agreement with fp32 is reported.
`--llama-cpp PATH` adds llama.cpp (llama-cpp-python built from
source outside the project: PATH is its virtual environment, or the folder holding its `llama_cpp` package) on
the same GGUF with its own Q4_1 kernels and the same threads, interleaved into the batch-1 decode and the
prefill rounds (its Python API decodes one sequence at a time, so it has no batch-8 row).

    python benchmarks/llama_decode.py [--new 64] [--rounds 3] [--threads 2] [--llama-cpp PATH]

Writes benchmarks/RESULTS-llama.md (or --out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from results import Run

import zupu
from zupu import weights
from zupu.hf.gguf import tokenizer
from zupu.nn import Int4Linear


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


def same_prefix(mine: torch.Tensor, ref: torch.Tensor) -> int:
    """How many leading tokens two greedy continuations share."""
    differ = (mine != ref).nonzero()
    return int(differ[0, 0]) if len(differ) else len(ref)


def load_llama_cpp(path: Path, gguf: Path, threads: int):
    """llama-cpp-python's Llama on `gguf` from a virtual environment (or a folder holding `llama_cpp`), kept out
    of the project's environment: only its package folder joins sys.path, after the project's own packages."""
    found = [path] if (path / "llama_cpp").is_dir() else sorted(path.glob("lib/python*/site-packages"))
    if not found or not (found[0] / "llama_cpp").is_dir():
        sys.exit(f"--llama-cpp {path}: no llama_cpp package there (a venv with llama-cpp-python, or its folder)")
    sys.path.append(str(found[0]))
    import llama_cpp

    # n_threads_batch too: it defaults to every core, which would give llama.cpp's prefill more threads
    cpp = llama_cpp.Llama(str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=512, n_batch=512,
                          verbose=False)
    cpp.version = llama_cpp.__version__
    return cpp


def cpp_greedy(cpp, tokens: list[int], new: int) -> list[int]:
    cpp.reset()
    out = cpp.generate(tokens, temp=0.0, top_k=1)
    return [next(out) for _ in range(new)]


def cpp_prefill(cpp, tokens: list[int]) -> None:
    cpp.reset()
    cpp.eval(tokens)


def dense_mib(model) -> float:
    """The dense weight copies `Int4Linear` layers keep for long inputs, in MiB."""
    return sum(m.dense.numel() * m.dense.element_size() for m in model.modules()
               if isinstance(m, Int4Linear) and m.dense is not None) / 2**20


def dense_dtype(model) -> str:
    return next(str(m.dense.dtype).removeprefix("torch.") for m in model.modules()
                if isinstance(m, Int4Linear) and m.dense is not None)


def rss_mib() -> float:
    """The process's resident memory now (Linux: /proc/self/statm's second field, in pages), after handing freed
    heap back to the system (a load's transient float32 copies would otherwise count against the next model)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--new", type=int, default=64, help="new tokens per row")
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens when decoding")
    p.add_argument("--prefill", type=int, default=256, help="prompt tokens of the prefill measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--llama-cpp", type=Path, help="a virtual environment with llama-cpp-python built, or the folder "
                   "holding its llama_cpp package")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-llama.md"))
    a = p.parse_args()
    run = Run(__file__)
    torch.set_num_threads(a.threads)
    import transformers

    gguf = weights.fetch("smollm2")
    zupus, rss = {}, {}
    for name, kw in {"fp32": {}, "int4": {"quantize": "int4"}, "bf16": {"dtype": torch.bfloat16}}.items():
        rss0 = rss_mib()
        zupus[name] = zupu.from_pretrained("smollm2", **kw)
        rss[name] = rss_mib() - rss0
    model = zupus["fp32"]
    rss0 = rss_mib()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    rss_hf = rss_mib() - rss0
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(100, 49152, (max(a.batches), a.prompt), generator=g)
    long = torch.randint(100, 49152, (1, a.prefill), generator=g)
    tok = tokenizer(gguf)
    cpp = load_llama_cpp(a.llama_cpp, gguf, a.threads) if a.llama_cpp else None
    agree = {}
    with torch.no_grad():  # same weights, same greedy tokens: a speed test of the same computation
        ours = torch.stack(list(model.generate(prompt[:1], 16, temperature=0)), 1)
        theirs = hf.generate(prompt[:1], attention_mask=torch.ones_like(prompt[:1]), max_new_tokens=16,
                             do_sample=False, pad_token_id=2, eos_token_id=None)[:, a.prompt:]
        assert torch.equal(ours, theirs), (ours, theirs)
        for name, m in zupus.items():  # how many of the first 32 greedy tokens match fp32's, per prompt
            counts = []
            for text in ("The capital of France is", "Water is made of"):
                ids = torch.tensor([tok.encode(text)])
                mine, ref = (torch.stack(list(x.generate(ids, 32, temperature=0)), 1)[0] for x in (m, model))
                counts.append(same_prefix(mine, ref))
            agree[name] = counts
        if cpp is not None:
            agree["llama.cpp"] = [same_prefix(torch.tensor(cpp_greedy(cpp, tok.encode(text), 32)),
                                              torch.stack(list(model.generate(torch.tensor([tok.encode(text)]), 32,
                                                                              temperature=0)), 1)[0])
                                  for text in ("The capital of France is", "Water is made of")]
    print("greedy tokens equal to fp32's (of 32, per prompt):", agree, flush=True)

    load0 = os.getloadavg()[0]
    rows = []
    cpp_rates = {"decode, batch 1": [], f"prefill, {a.prefill} tokens": []}  # llama.cpp's rounds, beside the rest
    for b in a.batches:
        x = prompt[:b]
        decode_hf(hf, x, 4)  # warm-up
        for m in zupus.values():
            decode_zupu(m, x, 4)
        z, h = {name: [] for name in zupus}, []
        for _ in range(a.rounds):  # interleaved
            h.append(rate(lambda x=x: decode_hf(hf, x, a.new), b * a.new))
            for name, m in zupus.items():
                z[name].append(rate(lambda x=x, m=m: decode_zupu(m, x, a.new), b * a.new))
            if cpp is not None and b == 1:
                cpp_rates["decode, batch 1"].append(rate(lambda x=x: cpp_greedy(cpp, x[0].tolist(), a.new), a.new))
        for name in zupus:
            rows.append((f"decode, batch {b}, zupu {name}", z[name], h))
            print(rows[-1][0], f"{max(r[0] for r in z[name]):.1f} tok/s, transformers {max(r[0] for r in h):.1f}",
                  flush=True)
    with torch.no_grad():
        z, h = {name: [] for name in zupus}, []
        for _ in range(a.rounds):
            h.append(rate(lambda: hf(long, logits_to_keep=1), a.prefill))
            for name, m in zupus.items():
                z[name].append(rate(lambda m=m: m(long, last_only=True), a.prefill))
            if cpp is not None:
                cpp_rates[f"prefill, {a.prefill} tokens"].append(rate(lambda: cpp_prefill(cpp, long[0].tolist()),
                                                                      a.prefill))
    rows += [(f"prefill, {a.prefill} tokens, zupu {name}", z[name], h) for name in zupus]
    lines = [
        "# Llama (SmolLM2-135M) decoding and prefill: zupu vs transformers `generate`",
        "",
        f"SmolLM2-135M-Instruct from its Q4_1 GGUF; transformers dequantises it to fp32; zupu: fp32 (dequantised, "
        f"the parity path), int4 (`quantize='int4'`: the file's 4-bit blocks through torch's CPU int4 GEMM with "
        f"bfloat16 products) and bf16 (`dtype=torch.bfloat16`). Greedy; decode: prompt "
        f"{a.prompt}, {a.new} new tokens per row; {a.threads} threads; {a.rounds} rounds, interleaved; "
        f"torch {torch.__version__}, transformers {transformers.__version__}; load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end. zupu fp32's greedy tokens equal transformers' before timing.",
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
    lines += ["", "Greedy tokens (32 per prompt) equal to zupu fp32's before the first difference, for \"The capital "
              "of France is\" and \"Water is made of\": "
              + "; ".join(f"{name} {c[0]} and {c[1]}" for name, c in agree.items()) + ".",
              "", "Memory (resident set growth on loading): "
              + ", ".join(f"zupu {name} {v:.0f} MiB" for name, v in rss.items())
              + f", transformers {rss_hf:.0f} MiB (fp32 weights: {weights_mib:.0f} MiB). zupu int4 keeps the token "
              "embedding in fp32 for its row lookups; fp32 decoding adds a oneDNN-packed copy of each weight. "
              f"zupu int4's inputs of {Int4Linear.DENSE_ROWS}+ rows x planes (a prompt; the Q8_0 output layer, two "
              "planes, at batch 8) add the dense copies they multiply by: "
              f"{dense_mib(zupus['int4']):.0f} MiB more by the end ({dense_dtype(zupus['int4'])}; "
              f"{dense_mib(zupus['int4'].lm_head):.0f} MiB of it the output layer's)."]
    if cpp is not None:
        lines += ["", f"## zupu vs llama.cpp (llama-cpp-python {cpp.version}, built from source with its native "
                  f"CPU kernels, at {a.llama_cpp}), same GGUF, same {a.threads} thread(s), interleaved with the rounds "
                  "above", "",
                  "| measurement | zupu tokens/s (best) | llama.cpp tokens/s (best) | ratio, wall (median) "
                  "| ratio, CPU time (median) |", "|---|---|---|---|---|"]
        for name, z, _ in rows:
            c = cpp_rates.get(name.rsplit(", zupu ", 1)[0])
            if c:
                wall = statistics.median(zi[0] / ci[0] for zi, ci in zip(z, c, strict=True))
                cpu = statistics.median(zi[1] / ci[1] for zi, ci in zip(z, c, strict=True))
                lines.append(f"| {name} | {max(r[0] for r in z):.1f} | {max(r[0] for r in c):.1f} | {wall:.2f}x "
                             f"| {cpu:.2f}x |")
        lines += ["", "llama.cpp multiplies its Q4_1 weights by activations it rounds to 8-bit blocks (Q8_1), so "
                  "its greedy tokens may leave fp32's early: see the agreement line above."]
    text = "\n".join(lines)
    print(text)
    run.write(a.out, text)


if __name__ == "__main__":
    main()
