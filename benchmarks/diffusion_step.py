"""zupu's diffusion sampling step vs diffusers': the same UNet weights, the same DDIM schedule, the same threads.

    python benchmarks/diffusion_step.py [--repeats 5] [--batch 32]

One sampling step is a UNet forward and a scheduler step, as both libraries' pipelines run it. Two UNets:
the fashion-ddpm recipe's full-size pixel model (a diffusers UNet2DModel, 28x28, self-attention) and a
small text-conditioned latent model (a UNet2DConditionModel, 4x16x16 latents, cross-attention to 8 text
states of 64). diffusers' model is random-initialised, saved, and loaded into zupu (`zupu.from_pretrained`),
so the weights are the same; the outputs are checked equal before timing. The two run interleaved, a few
warm-up steps first, and the median over repeats is reported. Both run on one torch thread and are timed in
process (CPU) time, which a shared, loaded machine disturbs far less than wall time (wall-time ratios of
the same code ranged 0.9-1.5 at load 20); the ratio is what to read. Writes benchmarks/RESULTS-diffusion.md,
stamped by results.py.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import diffusers
import torch
from results import Run

import zupu
from zupu.models.diffusion.unet import UNetConfig
from zupu.recipes.diffusion import FashionDDPM
from zupu.sampling import DDIMScheduler


def models(recipe_config: UNetConfig) -> dict[str, tuple[dict, dict]]:
    """name -> (diffusers class and constructor arguments, forward extras)."""
    pixel = {k: getattr(recipe_config, k) for k in ("sample_size", "in_channels", "out_channels", "block_out_channels",
                                                     "down_block_types", "up_block_types", "layers_per_block",
                                                     "attention_head_dim", "norm_num_groups", "num_class_embeds")}
    latent = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1, norm_num_groups=8,
                  cross_attention_dim=64, attention_head_dim=4)
    return {"fashion-ddpm UNet2DModel (28x28, 1 ch)": ("UNet2DModel", pixel),
            "text-conditioned UNet2DConditionModel (16x16, 4 ch)": ("UNet2DConditionModel", latent)}


def step_time(unet, scheduler, x: torch.Tensor, extras: dict, t: int, zupu_model: bool) -> float:
    start = time.process_time()
    with torch.no_grad():
        out = unet(x, t, **extras)
        out = out if zupu_model else out.sample
        scheduler.step(out, t, x)
    return time.process_time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    run = Run(__file__)
    torch.set_num_threads(1)  # the same for both; process time is then each step's own CPU work
    recipe = FashionDDPM()
    rows = []
    for name, (cls, kw) in models(recipe.config(recipe.settings())).items():
        torch.manual_seed(0)
        ref = getattr(diffusers, cls)(**kw).eval()
        with tempfile.TemporaryDirectory() as tmp:
            ref.save_pretrained(tmp)
            ours = zupu.from_pretrained(Path(tmp))
        size, ch = kw["sample_size"], kw["in_channels"]
        x = torch.randn(args.batch, ch, size, size)
        extras = {}
        if "num_class_embeds" in kw and kw["num_class_embeds"]:
            extras["class_labels"] = torch.arange(args.batch) % 10
        if "cross_attention_dim" in kw:
            extras["encoder_hidden_states"] = torch.randn(args.batch, 8, kw["cross_attention_dim"])
        with torch.no_grad():
            torch.testing.assert_close(ours(x, 500, **extras), ref(x, 500, **extras).sample, atol=1e-4, rtol=1e-4)
        theirs_s, ours_s = diffusers.DDIMScheduler(), DDIMScheduler()
        theirs_s.set_timesteps(50)
        ours_s.set_timesteps(50)
        times = {"zupu": [], "diffusers": []}
        for r in range(args.repeats + 2):  # two warm-up rounds
            for who in ("zupu", "diffusers"):
                took = step_time(ours if who == "zupu" else ref, ours_s if who == "zupu" else theirs_s, x, extras,
                                 int(ours_s.timesteps[10]), who == "zupu")
                if r >= 2:
                    times[who].append(took)
        z, d = statistics.median(times["zupu"]), statistics.median(times["diffusers"])
        rows.append((name, sum(q.numel() for q in ours.parameters()), z, d))
        print(name, f"zupu {z * 1000:.1f} ms, diffusers {d * 1000:.1f} ms, ratio {z / d:.2f}", flush=True)
    lines = ["# Diffusion sampling step: zupu vs diffusers", "",
             f"One DDIM step (UNet forward + scheduler step) on a batch of {args.batch}, same weights (diffusers' "
             "random init, loaded into zupu and checked equal), same schedule, one torch thread, CPU (process) "
             f"time; median of {args.repeats} interleaved repeats after two warm-ups. Read the ratio: absolute times "
             "depend on the load of the shared machine.", "",
             "| UNet | parameters | zupu ms | diffusers ms | zupu / diffusers |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {p:,} | {z * 1000:.1f} | {d * 1000:.1f} | {z / d:.2f} |" for n, p, z, d in rows]
    run.write(Path(__file__).with_name("RESULTS-diffusion.md"), "\n".join(lines), threads=1)


if __name__ == "__main__":
    main()
