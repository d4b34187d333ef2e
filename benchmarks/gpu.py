"""On a CUDA GPU: GPT-2-124M training against nanoGPT, and generation against transformers, side by side.

    python benchmarks/gpu.py /path/to/nanoGPT [--batch 16] [--rounds 3] [--steps 20] [--out benchmarks/RESULTS-gpu.md]

`/path/to/nanoGPT` is a checkout of github.com/karpathy/nanoGPT, kept outside this repository; its `model.py`
is imported as it is. Two measurements, each peer run in turn, round after round, on the same GPU:
1. Training tokens/s and model FLOPs utilisation (MFU) of the GPT-2-124M shape (12 layers, 12 heads, 768 wide,
   context 1024, vocabulary 50304 as nanoGPT pads it, no dropout, exact GELU as nanoGPT's): zupu's GPT against
   nanoGPT's `model.GPT`, each under `torch.compile`, bfloat16 autocast where the GPU has it (float16 is not
   tried), fused AdamW, on random tokens (a speed test: the same computation on both sides). MFU is
   tokens/s x FLOPs per token (6N + 12 L T d, nanoGPT's and the PaLM appendix's count) over the GPU's
   datasheet dense bf16 peak where this script knows the GPU, and always over the bf16 GEMM rate measured
   here (an 8192^2 matmul).
2. Generation tokens/s, greedy with the KV cache, of the same GPT-2-124M random weights (zupu loads the folder
   `transformers` saves; the first tokens are checked equal in float32) at batch 1 and 8, in bfloat16 where
   the GPU has it: zupu's `model.generate` against `transformers`' `generate`.

With no CUDA GPU it says so and measures nothing: there is no CPU stand-in for these numbers (the CPU's own
comparisons are gpt_train.py and gpt_generate.py). `--smoke` runs the same code on tiny shapes on whatever
device there is, without compiling, and writes nothing: a check that the script runs, not a measurement.

Writes benchmarks/RESULTS-gpu.md (or --out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from results import Run

import zupu
from zupu.models.gpt import GPT, GPTConfig

# Datasheet dense (no sparsity) bfloat16 tensor-core peaks, FLOP/s, by a name torch reports for the GPU
# (checked in order: "H100 PCIe" before "H100", whose SXM parts torch names "H100 80GB HBM3")
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12,
             "L40S": 362e12, "L4": 121e12, "A10G": 70e12, "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def datasheet_peak(name: str) -> float | None:
    for key, flops in PEAK_BF16.items():
        if key in name:
            return flops
    return None


def gemm_rate(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """FLOP/s of an n x n matmul in `dtype` on `device`, the best of `repeats`."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def nanogpt_module(checkout: Path):
    sys.path.insert(0, str(checkout))
    try:
        import model as nanogpt  # nanoGPT's model.py
    finally:
        sys.path.pop(0)
    return nanogpt


def models(nanogpt, shape: dict, device: torch.device) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=shape["vocab"], n_positions=shape["block"], n_embd=shape["d"],
                         n_layer=shape["layers"], n_head=shape["heads"], activation_function="gelu",
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).to(device)
    theirs = nanogpt.GPT(nanogpt.GPTConfig(block_size=shape["block"], vocab_size=shape["vocab"],
                                           n_layer=shape["layers"], n_head=shape["heads"], n_embd=shape["d"],
                                           dropout=0.0, bias=True)).to(device)
    return {"zupu": ours, "nanoGPT": theirs}


def train_stepper(name: str, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None,
                  compile: bool):
    """One training step (forward, backward, fused AdamW) as a function of (x, y)."""
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=device.type == "cuda")
    # the loss whole, cross-entropy included, as nanoGPT's forward(x, y) computes it
    if name == "zupu":
        loss = torch.compile(model.loss) if compile else model.loss
    else:
        fwd = torch.compile(model) if compile else model

        def loss(x, y):
            return fwd(x, y)[1]

    def step(x, y):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            value = loss(x, y)
        value.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return value

    return step


def time_training(steppers: dict, batch: tuple[torch.Tensor, torch.Tensor], device: torch.device, steps: int,
                  rounds: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per step of each peer: `rounds` alternating timings of `steps` steps, after `warmup` steps each
    (which compile)."""
    for step in steppers.values():
        for _ in range(warmup):
            step(*batch)
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for r in range(rounds):
        for name, step in steppers.items():
            sync(device)
            t = time.perf_counter()
            for _ in range(steps):
                step(*batch)
            sync(device)
            times[name].append((time.perf_counter() - t) / steps)
            print(f"round {r}: {name} {times[name][-1] * 1e3:.1f} ms/step", flush=True)
    return times


def time_generation(peers: dict, prompt: torch.Tensor, new: int, device: torch.device) -> dict[str, float]:
    """Tokens per second of each peer's greedy generation of `new` tokens after `prompt`."""
    out = {}
    for name, gen in peers.items():
        gen(prompt, 4)  # warm-up
        sync(device)
        t = time.perf_counter()
        gen(prompt, new)
        sync(device)
        out[name] = prompt.size(0) * new / (time.perf_counter() - t)
    return out


def generation_peers(hf, ours) -> dict:
    def zupu_gen(prompt, new):
        got = list(ours.generate(prompt, new, temperature=0))
        assert len(got) == new

    def hf_gen(prompt, new):
        got = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new,
                          do_sample=False, pad_token_id=0, eos_token_id=None)
        assert got.size(1) == prompt.size(1) + new

    return {"zupu": zupu_gen, "transformers": hf_gen}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("nanogpt", type=Path, help="a checkout of github.com/karpathy/nanoGPT")
    p.add_argument("--batch", type=int, default=16, help="sequences of 1024 tokens per training step")
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (torch.compile compiles in them)")
    p.add_argument("--new", type=int, default=128, help="generated tokens per row")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on any device, nothing written")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-gpu.md"))
    a = p.parse_args()
    run = Run(__file__)
    if not torch.cuda.is_available() and not a.smoke:
        print(f"no CUDA GPU on this machine (torch {torch.__version__}, cuda {torch.version.cuda}): nothing "
              "measured, nothing written. Run this script where CUDA is.")
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke)"
    bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else False
    dtype = torch.bfloat16 if bf16 else None
    shape = ({"vocab": 256, "block": 64, "d": 64, "layers": 2, "heads": 2} if a.smoke else
             {"vocab": 50304, "block": 1024, "d": 768, "layers": 12, "heads": 12})
    compile = not (a.no_compile or a.smoke)
    torch.backends.cuda.matmul.allow_tf32 = True  # what nanoGPT's train.py sets; float32 parts only
    torch.backends.cudnn.allow_tf32 = True

    # 1. training
    nets = models(nanogpt_module(a.nanogpt), shape, device)
    steppers = {name: train_stepper(name, m, device, dtype, compile) for name, m in nets.items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, shape["vocab"], (a.batch, shape["block"] + 1), generator=g)
    batch = (x[:, :-1].contiguous().to(device), x[:, 1:].contiguous().to(device))
    times = time_training(steppers, batch, device, a.steps, a.rounds, a.warmup)
    tokens = a.batch * shape["block"]
    flops = nets["zupu"].flops_per_token(shape["block"])  # the same network on both sides
    measured = gemm_rate(device, dtype or torch.float32, 8192 if device.type == "cuda" else 512)
    peak = datasheet_peak(gpu) if device.type == "cuda" else None
    rows = []
    for name, t in times.items():
        best = tokens / min(t)
        mfu = f"{best * flops / peak:.1%}" if peak else "—"
        rows.append(f"| {name} | {best:,.0f} | {min(t) * 1e3:.1f} | {mfu} | {best * flops / measured:.1%} |")
    ratio = statistics.median(n / z for z, n in zip(times["zupu"], times["nanoGPT"], strict=True))

    # 2. generation
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(bos_token_id=None, eos_token_id=None, n_positions=shape["block"],
                                  vocab_size=shape["vocab"], n_embd=shape["d"], n_layer=shape["layers"],
                                  n_head=shape["heads"])
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = zupu.from_pretrained(d).eval()
    hf, ours = hf.to(device), ours.to(device)
    prompt = torch.randint(0, shape["vocab"], (8, 16), generator=g).to(device)
    with torch.no_grad():  # same weights, same greedy tokens in float32: a speed test of the same computation
        a_ids = torch.stack(list(ours.generate(prompt[:1], 8, temperature=0)), 1)
        b_ids = hf.generate(prompt[:1], attention_mask=torch.ones_like(prompt[:1]), max_new_tokens=8,
                            do_sample=False, pad_token_id=0, eos_token_id=None)[:, 16:]
    assert torch.equal(a_ids, b_ids), (a_ids, b_ids)
    if dtype is not None:
        hf, ours = hf.to(dtype), ours.to(dtype)
    gen_rows = []
    with torch.no_grad():
        for b in (1, 8):
            speeds = time_generation(generation_peers(hf, ours), prompt[:b], a.new, device)
            gen_rows.append(f"| {b} | {speeds['zupu']:,.0f} | {speeds['transformers']:,.0f} | "
                            f"{speeds['zupu'] / speeds['transformers']:.2f}x |")

    lines = [
        "# GPT-2-124M on a GPU: zupu vs nanoGPT (training), vs transformers (generation)",
        "",
        f"{gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}, transformers {transformers.__version__}; "
        f"{'bfloat16 autocast' if dtype else 'float32 (TF32 matmuls)'}, torch.compile {'on' if compile else 'off'}, "
        f"fused AdamW, batch {a.batch} x {shape['block']} tokens, {a.rounds} alternating rounds of {a.steps} steps "
        f"after {a.warmup} warm-up steps.",
        "",
        "| training | tokens/s (best round) | ms/step | MFU (datasheet bf16 peak) | MFU (measured GEMM rate) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"zupu / nanoGPT training speed: {ratio:.2f}x (median of the per-round ratios). FLOPs per token "
        f"{flops / 1e9:.3f} G (6N + 12 L T d); datasheet peak {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown'}"
        f", measured {'bf16' if dtype else 'fp32'} GEMM {measured / 1e12:.0f} TFLOP/s.",
        "",
        "| generation batch | zupu tokens/s | transformers tokens/s | ratio |",
        "|---|---|---|---|",
        *gen_rows,
        "",
        f"Greedy, prompt 16, {a.new} new tokens per row, KV cache on both sides, "
        f"{'bfloat16' if dtype else 'float32'} weights (the first 8 tokens checked equal in float32).",
    ]
    text = "\n".join(lines)
    print(text)
    if a.smoke:
        print("(smoke run: tiny shapes, nothing written)")
        return 0
    run.write(a.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
