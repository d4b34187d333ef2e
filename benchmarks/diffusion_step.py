"""zupu's diffusion sampling step vs diffusers': the same UNet weights, the same DDIM schedule, the same threads.

    python benchmarks/diffusion_step.py [--repeats 5] [--batch 32] [--taesd DIR] [--ddpm-run RUN]

One sampling step is a UNet forward and a scheduler step, as both libraries' pipelines run it. Two UNets:
the fashion-ddpm recipe's full-size pixel model (a diffusers UNet2DModel, 28x28, self-attention) and a
small text-conditioned latent model (a UNet2DConditionModel, 4x16x16 latents, cross-attention to 8 text
states of 64). diffusers' model is random-initialised, saved, and loaded into zupu (`zupu.from_pretrained`),
so the weights are the same; the outputs are checked equal before timing. The two run interleaved, a few
warm-up steps first, and the median over repeats is reported. Both run on one torch thread and are timed in
process (CPU) time, which a shared, loaded machine disturbs far less than wall time (wall-time ratios of
the same code ranged 0.9-1.5 at load 20); the ratio is what to read. Writes benchmarks/RESULTS-diffusion.md,
stamped by results.py.

`--taesd DIR` (a checkout of https://github.com/madebyollin/taesd, e.g. what zupu's `fetch` brings; its
taesd.py is imported from there, never copied) adds TAEF2 encode and decode on real 64px emoji, zupu's
against the reference's, same weights (the registry's `taef2`), outputs checked equal, timed the same way.
`--ddpm-run RUN` (a fashion-ddpm run) adds its samples drawn with DDIM in 20, 50 and 100 steps and DDPM in 1000
from the same noise and labels: Frechet distance in the judge's features and the judge's accuracy, side by side.
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


def taef2_rows(folder: Path, repeats: int) -> list[str]:
    """TAEF2 encode / decode of 16 real emoji, zupu vs the reference's taesd.py, process time, median."""
    import sys

    from zupu import data, weights
    from zupu.hf.diffusion import load_taesd

    sys.path.insert(0, str(folder))
    import taesd

    w = weights.fetch("taef2")
    ref = taesd.TAESD(w / "taef2_encoder.pth", w / "taef2_decoder.pth").eval()
    ours = load_taesd()
    x = torch.from_numpy(data.load("emoji-noto-64").images[::200][:16]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        z = ours.encode(x)
        torch.testing.assert_close(z, ref.encoder(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.decode(z), ref.decoder(z), atol=1e-5, rtol=1e-5)
    jobs = {"encode": ((ours.encode, ref.encoder), x), "decode": ((ours.decode, ref.decoder), z)}
    lines = ["", f"## TAEF2: zupu vs the reference (madebyollin's taesd.py), {len(x)} real 64x64 emoji", "",
             "Same weights (the registry's verified `taef2`), outputs equal within 1e-5; one thread, process time, "
             f"median of {repeats} interleaved repeats after two warm-ups.", "",
             "| pass | zupu ms | reference ms | zupu / reference |", "|---|---:|---:|---:|"]
    for name, ((mine, theirs), inp) in jobs.items():
        times = {"zupu": [], "ref": []}
        for r in range(repeats + 2):
            for who, fn in (("zupu", mine), ("ref", theirs)):
                start = time.process_time()
                with torch.no_grad():
                    fn(inp)
                if r >= 2:
                    times[who].append(time.process_time() - start)
        a, b = statistics.median(times["zupu"]), statistics.median(times["ref"])
        print(f"taef2 {name}: zupu {a * 1000:.1f} ms, reference {b * 1000:.1f} ms, ratio {a / b:.2f}", flush=True)
        lines.append(f"| {name} | {a * 1000:.1f} | {b * 1000:.1f} | {a / b:.2f} |")
    return lines


def sampler_rows(run_dir: Path, samples: int) -> list[str]:
    """A fashion-ddpm run's guided samples by DDIM in 20, 50 and 100 steps (the recipe's sampler, and diffusers'
    default step beside it) and by DDPM in 1000, same labels and noise seed."""
    import json

    from zupu.recipes.diffusion import NULL, frechet_distance, judge, pixels
    from zupu.sampling import DDPMScheduler, denoise
    from zupu.train.metrics import accuracy

    recipe = FashionDDPM()
    meta = json.loads((run_dir / "config.json").read_text())["zupu"]
    s = recipe.settings(overrides=meta["settings"])
    model = zupu.from_pretrained(run_dir).eval()
    net, _ = judge(s.image_size, s.classifier_train, s.classifier_epochs)
    labels = torch.arange(samples) % 10
    real = net.features(pixels("test", s.image_size)[0][:samples])
    lines = ["", f"## DDIM in 20, 50 and 100 steps vs DDPM in 1000: {samples} guided samples (w={s.guidance:g}) of "
             f"`{run_dir.name}` ({s.image_size}x{s.image_size}, {s.steps} training steps)", "",
             "The same labels and noise seed; Frechet distance in the judge's features against as many real test "
             "images, and the judge's accuracy on the samples; CPU seconds of drawing them. The recipe's DDIM clips "
             "x_0 to [-1, 1] and re-derives eps from the clipped x_0 (`use_clipped_model_output`); diffusers' "
             "default keeps the model's eps. Guidance pushes x_0 beyond [-1, 1], and stepping with the clipped x_0 "
             "but the unclipped eps leaves x_t off the path the model was trained on, more so the more steps: that "
             "was the DDIM 50 < DDIM 20 anomaly (diffusers' own loop on the same weights and noise gives the same "
             "samples, within 1.3e-5).", "",
             "| sampler | steps | x_0 clipped, eps | Frechet distance | judge accuracy | CPU s |",
             "|---|---:|---|---:|---:|---:|"]
    arms = [("DDIM", 20, True, True), ("DDIM", 50, True, True), ("DDIM", 100, True, True),
            ("DDIM", 20, True, False), ("DDIM", 50, True, False), ("DDIM", 100, True, False),
            ("DDIM", 50, False, False), ("DDPM", 1000, True, False)]
    for name, steps, clip, rederive in arms:
        sched = DDIMScheduler(clip_sample=clip) if name == "DDIM" else DDPMScheduler()
        g = torch.Generator().manual_seed(1234)  # as recipe.draw
        noise = torch.randn(samples, 1, s.image_size, s.image_size, generator=g)
        start = time.process_time()
        with torch.no_grad():
            x = denoise(model, sched, noise, steps, labels=labels, null_label=NULL, guidance=s.guidance, generator=g,
                        step_kwargs={"use_clipped_model_output": True} if rederive else None).clamp(-1, 1)
        took = time.process_time() - start
        fd, acc = frechet_distance(net.features(x), real), accuracy(net, x, labels)
        how = "not clipped" if not clip else ("clipped, re-derived (the recipe's)" if rederive else
                                              "clipped, the model's (diffusers' default)")
        if name == "DDPM":
            how = "clipped (DDPM's mean uses x_0 only)"
        print(f"{name} {steps} {how}: fd {fd:.3f} acc {acc:.3f} {took:.1f} s", flush=True)
        lines.append(f"| {name} | {steps} | {how} | {fd:.3f} | {acc:.3f} | {took:.1f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--taesd", type=Path, help="a checkout of madebyollin/taesd: adds TAEF2 zupu vs reference")
    p.add_argument("--ddpm-run", type=Path, help="a fashion-ddpm run: adds DDIM 20/50/100 vs DDPM 1000 on its samples")
    p.add_argument("--samples", type=int, default=200, help="samples per sampler with --ddpm-run")
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
    if args.taesd:
        lines += taef2_rows(args.taesd, args.repeats)
    if args.ddpm_run:
        lines += sampler_rows(args.ddpm_run, args.samples)
    run.write(Path(__file__).with_name("RESULTS-diffusion.md"), "\n".join(lines), threads=1)


if __name__ == "__main__":
    main()
