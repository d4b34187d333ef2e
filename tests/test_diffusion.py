"""diffusion: the schedulers and the UNet against diffusers, the recipe's pieces, `zupu draw`'s errors."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
from reference import need

from zupu.errors import SettingError, UnknownName
from zupu.sampling import DDIMScheduler, DDPMScheduler

# Schedulers -------------------------------------------------------------------------------------------------

_COMBOS = list(itertools.product(("linear", "scaled_linear", "squaredcos_cap_v2"),
                                 ("epsilon", "sample", "v_prediction"), ("leading", "trailing", "linspace")))


def _walk(ours, theirs, steps: int, seed: int, **step_kw) -> None:
    """Set both to `steps`, then step both from the same x_T with the same model outputs and noise."""
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 4, 4, generator=g)
    x_ref = x.clone()
    for t in ours.timesteps.tolist():
        out = torch.randn(2, 3, 4, 4, generator=g)  # a stand-in model's output, not all zeros or ones
        a = ours.step(out, t, x, generator=torch.Generator().manual_seed(t), **step_kw)
        b = theirs.step(out, t, x_ref, generator=torch.Generator().manual_seed(t), **step_kw)
        torch.testing.assert_close(a.pred_original_sample, b.pred_original_sample, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(a.prev_sample, b.prev_sample, atol=1e-6, rtol=1e-6)
        x, x_ref = a.prev_sample, b.prev_sample


@pytest.mark.parametrize(("schedule", "prediction", "spacing"), _COMBOS)
def test_schedulers_equal_diffusers(schedule, prediction, spacing):
    diffusers = need("diffusers")
    kw = dict(num_train_timesteps=100, beta_schedule=schedule, prediction_type=prediction, timestep_spacing=spacing,
              beta_start=0.00085 if schedule == "scaled_linear" else 0.0001,
              beta_end=0.012 if schedule == "scaled_linear" else 0.02,
              steps_offset=1 if spacing == "leading" else 0, clip_sample=prediction != "v_prediction")
    ours, theirs = DDPMScheduler(**kw), diffusers.DDPMScheduler(**kw)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, atol=0, rtol=0)
    x0, noise, t = torch.randn(3, 1, 5, 5), torch.randn(3, 1, 5, 5), torch.tensor([0, 37, 99])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours.get_velocity(x0, noise, t), theirs.get_velocity(x0, noise, t))
    _walk(ours, theirs, 50, 0)
    _walk(ours, theirs, 7, 1)  # strided
    ddim = dict(kw, set_alpha_to_one=spacing != "linspace")
    _walk(DDIMScheduler(**ddim), diffusers.DDIMScheduler(**ddim), 10, 2)
    _walk(DDIMScheduler(**ddim), diffusers.DDIMScheduler(**ddim), 10, 3, eta=0.7, use_clipped_model_output=True)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_small_log", "fixed_large", "learned_range"])
def test_ddpm_variances_and_thresholding_equal_diffusers(variance):
    diffusers = need("diffusers")
    kw = dict(num_train_timesteps=50, variance_type=variance, thresholding=variance == "fixed_large",
              sample_max_value=2.0, rescale_betas_zero_snr=variance == "fixed_small_log")
    ours, theirs = DDPMScheduler(**kw), diffusers.DDPMScheduler(**kw)
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 3, 3, generator=g) * 2
    channels = 4 if variance == "learned_range" else 2
    for t in ours.timesteps.tolist():
        out = torch.randn(2, channels, 3, 3, generator=g).clamp(-1, 1)
        a = ours.step(out, t, x, generator=torch.Generator().manual_seed(t))
        b = theirs.step(out, t, x, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(a.prev_sample, b.prev_sample, atol=1e-6, rtol=1e-6)
        x = a.prev_sample


def test_schedulers_build_from_a_diffusers_config_and_reject_bad_arguments(tmp_path):
    diffusers = need("diffusers")
    diffusers.DDIMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction").save_config(tmp_path)
    from zupu.checkpoint import read_config
    from zupu.sampling import scheduler_from_config

    ours = scheduler_from_config(read_config(tmp_path / "scheduler_config.json"))
    assert isinstance(ours, DDIMScheduler) and ours.config["prediction_type"] == "v_prediction"
    with pytest.raises(UnknownName, match="did you mean linear"):
        DDPMScheduler(beta_schedule="lnear")
    with pytest.raises(SettingError, match="num_inference_steps must be between 1"):
        DDIMScheduler().set_timesteps(0)
    with pytest.raises(SettingError, match="set_timesteps"):
        DDIMScheduler().step(torch.zeros(1), 10, torch.zeros(1))


# The UNet ---------------------------------------------------------------------------------------------------


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Weights that are not diffusers' init: norms' gains and biases too, and zero-initialised outputs."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.5 if p.dim() == 1 else 0.0, 0.2)
    return module


_UNET2D = dict(sample_size=16, in_channels=3, out_channels=2, block_out_channels=(16, 32, 32), layers_per_block=2,
               norm_num_groups=8, down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
               up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
               num_class_embeds=5, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6, downsample_padding=0,
               mid_block_scale_factor=1.5)
_UNET2D_COND = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                    norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
                    attention_head_dim=(2, 4), transformer_layers_per_block=2, num_class_embeds=3)


@pytest.mark.parametrize(("cls", "kw"), [("UNet2DModel", _UNET2D), ("UNet2DConditionModel", _UNET2D_COND),
                                         ("UNet2DConditionModel", dict(_UNET2D_COND, use_linear_projection=True))])
def test_unet_loads_diffusers_checkpoints_and_saves_them_back(tmp_path, cls, kw):
    diffusers = need("diffusers")
    import zupu
    from zupu.checkpoint import save_model

    torch.manual_seed(0)
    ref = _randomise(getattr(diffusers, cls)(**kw)).eval()
    ref.save_pretrained(tmp_path / "theirs")
    ours = zupu.from_pretrained(tmp_path / "theirs")
    assert type(ours).__name__ == "UNet"
    b, size = 2, kw["sample_size"]
    x = torch.randn(b, kw["in_channels"], size, size)
    t = torch.tensor([3, 817])
    args = {"class_labels": torch.tensor([1, 2])}
    if "cross_attention_dim" in kw:
        args["encoder_hidden_states"] = torch.randn(b, 5, kw["cross_attention_dim"])
    with torch.no_grad():
        want = ref(x, t, **args).sample
        got = ours(x, t, **args)
    assert want.abs().mean() > 0.1  # a real signal, not a zero-initialised output layer
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a scalar timestep means the same step for every sample
        torch.testing.assert_close(ours(x, 7, **args), ref(x, 7, **args).sample, atol=1e-5, rtol=1e-5)
    save_model(ours, tmp_path / "ours")
    back = getattr(diffusers, cls).from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x, t, **args).sample, want, atol=1e-5, rtol=1e-5)


def test_unet_rejects_what_it_cannot_hold(tmp_path):
    diffusers = need("diffusers")
    import json

    import zupu
    from zupu.errors import CheckpointError
    from zupu.models.diffusion import UNet, UNetConfig

    diffusers.UNet2DModel(**dict(_UNET2D, resnet_time_scale_shift="scale_shift")).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="resnet_time_scale_shift='scale_shift' is not supported"):
        zupu.from_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(SettingError, match="CrossAttnDownBlock2D needs cross_attention_dim"):
        UNetConfig(down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"))
    unet = UNet(UNetConfig(block_out_channels=(8, 16), norm_num_groups=4, num_class_embeds=3))
    with pytest.raises(SettingError, match="multiples of 2"):
        unet(torch.zeros(1, 1, 7, 8), 1, class_labels=torch.tensor([0]))
    with pytest.raises(SettingError, match="pass class_labels"):
        unet(torch.zeros(1, 1, 8, 8), 1)
    assert cfg["_class_name"] == "UNet2DModel"


# Sampling: guidance, img2img, inpainting, and the quality measures -----------------------------------------


def _toy_unet(x, t, class_labels=None):
    """A stand-in denoiser whose prediction depends on the input, the step and the label."""
    shift = 0.0 if class_labels is None else class_labels.float().view(-1, 1, 1, 1) / 10
    return 0.3 * x + shift + t / 2000


def test_denoise_guides_noises_and_inpaints_as_documented():
    from zupu.sampling import denoise

    sched = DDIMScheduler(num_train_timesteps=100)
    g = torch.Generator().manual_seed(0)
    noise, init = torch.randn(4, 1, 6, 6, generator=g), torch.rand(4, 1, 6, 6, generator=g) * 2 - 1
    labels = torch.tensor([0, 1, 2, 3])
    plain = denoise(_toy_unet, sched, noise, 10, labels=labels)
    # guidance w mixes (1 + w) conditional - w unconditional: w = 0 is the conditional model alone
    assert torch.equal(denoise(_toy_unet, sched, noise, 10, labels=labels, null_label=9, guidance=0.0), plain)
    assert not torch.allclose(denoise(_toy_unet, sched, noise, 10, labels=labels, null_label=9, guidance=2.0), plain)
    # img2img: strength 0 returns the image, strength 1 ignores it
    assert torch.equal(denoise(_toy_unet, sched, noise, 10, labels=labels, init=init, strength=0.0), init)
    torch.testing.assert_close(denoise(_toy_unet, sched, noise, 10, labels=labels, init=init, strength=1.0), plain)
    # inpainting keeps the unmasked pixels exactly and draws the masked ones
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 2:4, 2:4] = 1
    out = denoise(_toy_unet, sched, noise, 10, labels=labels, init=init, mask=mask, generator=g)
    assert torch.equal(out * (1 - mask), init * (1 - mask)) and not torch.allclose(out * mask, init * mask)
    trajectory = []
    denoise(_toy_unet, sched, noise, 10, labels=labels, trajectory=trajectory)
    assert len(trajectory) == 10
    for kw, match in ((dict(guidance=-1.0, null_label=9), "guidance must be >= 0"),
                      (dict(init=init, mask=torch.ones(1, 1, 5, 6)), r"mask must be \(B, 1, 6, 6\)"),
                      (dict(init=init[:, :, :5]), "init image is"), (dict(strength=0.5), "need an init image")):
        with pytest.raises(SettingError, match=match):
            denoise(_toy_unet, sched, noise, 10, labels=labels, **kw)
    with pytest.raises(SettingError, match="steps must be at least 1"):
        denoise(_toy_unet, sched, noise, 0)


def test_guided_ddim_lands_on_the_data_in_any_number_of_steps():
    """fashion-ddpm's DDIM with guidance, given the exact denoiser of a two-image dataset (every pixel -0.8, or
    every pixel 0.8, one per class), ends on its class's image at 20, 50 and 100 steps. Guidance pushes x_0
    beyond [-1, 1]; clipping it but stepping with the unclipped eps (diffusers' default) ended on 1.0 at 50 and
    100 steps, not 0.8: the quick model's DDIM 50 scored 0.24 where DDIM 20 scored 0.66."""
    from zupu.recipes.diffusion import NULL, FashionDDPM
    from zupu.sampling import denoise

    recipe = FashionDDPM()
    sched = recipe.scheduler(recipe.settings())
    abar = sched.alphas_cumprod.double()
    m = torch.tensor([-0.8, 0.8], dtype=torch.float64)

    def exact(x, t, class_labels):
        a = abar[t]
        # the unconditional x_0: the posterior mean over the two images given x_t
        log_p = torch.stack([-(x - a.sqrt() * v).square().flatten(1).sum(1) / (2 * (1 - a)) for v in m], 1)
        x0 = torch.where(class_labels == NULL, (log_p.softmax(1) * m).sum(1), m[class_labels.clamp(max=1)])
        return (x - a.sqrt() * x0.view(-1, 1, 1, 1)) / (1 - a).sqrt()

    labels = torch.tensor([0, 1] * 4)
    noise = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for steps in (20, 50, 100):
        x = denoise(exact, sched, noise, steps, labels=labels, null_label=NULL, guidance=2.0,
                    step_kwargs=recipe.step_kwargs(sched))
        torch.testing.assert_close(x, m[labels].view(-1, 1, 1, 1).expand_as(x), atol=1e-4, rtol=0)


def test_latent_sampling_keeps_the_standardised_latents_spread():
    """emoji-latent's latents are standardised (unit spread, 30% beyond +-1): its DDIM must not clip x_0 to
    pixels' [-1, 1]. With the exact denoiser of N(0, I) data, eps(x_t) = sqrt(1 - abar_t) x_t, each DDIM step
    maps x_t to c x_t, c = sqrt(abar_prev abar_t) + sqrt((1 - abar_prev)(1 - abar_t)), so the samples' spread
    is the product of the c's (0.936 here; the recipe's +-3 clipping leaves 0.934); clipping to +-1, as the
    recipe once did, leaves 0.70 (and drew washed-out patches)."""
    from zupu.recipes.diffusion import EmojiLatent
    from zupu.sampling import denoise

    recipe = EmojiLatent()
    sched = recipe.scheduler(recipe.settings())
    abar = sched.alphas_cumprod.double()
    noise = torch.randn(16, 32, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = denoise(lambda x, t, **_: (1 - abar[t]) ** 0.5 * x, sched, noise, 20)
    ts = sched.timesteps.tolist()
    expected = 1.0
    for t, prev in zip(ts, ts[1:] + [None], strict=True):
        a_prev = abar[prev] if prev is not None else torch.tensor(1.0, dtype=torch.float64)
        expected *= float((a_prev * abar[t]).sqrt() + ((1 - a_prev) * (1 - abar[t])).sqrt())
    assert abs(float(z.std() / noise.std()) - expected) < 0.005


def test_frechet_distance_equals_torchmetrics_formula():
    need("torchmetrics")
    from torchmetrics.image.fid import _compute_fid

    from zupu.recipes.diffusion import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 16, generator=g, dtype=torch.float64)
    b = torch.randn(300, 16, generator=g, dtype=torch.float64) @ torch.randn(16, 16, generator=g, dtype=torch.float64)
    b += 0.5
    want = _compute_fid(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))
    assert frechet_distance(a, b) == pytest.approx(float(want), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


# zupu draw -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An untrained tiny fashion-ddpm run directory, as `zupu train` saves one."""
    import dataclasses

    from zupu import registry
    from zupu.checkpoint import save_model

    recipe = registry.get("diffusion").recipe("fashion-ddpm")
    s = recipe.settings(overrides=recipe.tiny)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("run")
    save_model(recipe.build(s), out, {"member": "diffusion", "recipe": recipe.name, "seed": 0,
                                      "settings": dataclasses.asdict(s)})
    return out, s.image_size


def _png(path, size, mode="L"):
    from PIL import Image

    Image.new(mode, size, 128).save(path)
    return str(path)


def test_zupu_draw_writes_pngs_and_names_each_bad_input(tiny_run, tmp_path, monkeypatch):
    from PIL import Image

    from zupu.apps.draw import draw
    from zupu.cli import main

    run, size = tiny_run
    monkeypatch.setenv("ZUPU_PROGRESS", "0")
    out = tmp_path / "draw.png"
    assert main(["draw", str(run), "--prompt", "an ankle Boot", "--steps", "3", "--n", "2", "--out", str(out)]) == 0
    assert Image.open(out).size == (2 * size * 4, size * 4)
    init = _png(tmp_path / "init.png", (size, size))
    mask = _png(tmp_path / "mask.png", (size, size))
    assert draw(run, "bag", steps=4, n=2, init=init, strength=0.5).shape == (2, 1, size, size)
    assert draw(run, "3", steps=2, n=1, init=init, mask=mask).shape == (1, 1, size, size)
    bad = [(dict(init=_png(tmp_path / "big.png", (size + 1, size))), f"is {size + 1}x{size}; this model draws"),
           (dict(init=_png(tmp_path / "rgb.png", (size, size), "RGB")), "is mode RGB.*convert it to mode L"),
           (dict(init=init, mask=_png(tmp_path / "m.png", (size, size + 2))), "--mask .* resize it"),
           (dict(mask=mask), "--mask needs --init"), (dict(guidance=-0.5), "--guidance must be >= 0"),
           (dict(steps=0), "--steps must be at least 1"), (dict(label="sock"), "names none of this model's classes")]
    for kw, match in bad:
        with pytest.raises(SettingError, match=match):
            draw(run, **{"label": "bag", "steps": 2, "n": 1, **kw})


# TAEF2, the tiny latent autoencoder ------------------------------------------------------------------------


def _real_images() -> torch.Tensor:
    """Four real Noto emoji on white, halved to 32x32 (the autoencoder's cost grows with the pixels): (4, 3, 32, 32)."""
    import numpy as np
    from PIL import Image

    root = Path(os.environ.get("ZUPU_DATA_MIRROR", "")) / "emoji-noto-64" / "img" / "google" / "64"
    files = sorted(root.glob("*.png"))[::900][:4]
    if len(files) < 4:
        pytest.skip("the emoji-noto-64 images are not in ZUPU_DATA_MIRROR")
    emoji = []
    for f in files:
        with Image.open(f) as im:
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
            emoji.append(np.asarray(rgb.resize((32, 32), Image.LANCZOS)))
    return torch.from_numpy(np.stack(emoji)).permute(0, 3, 1, 2).float() / 255  # (4, 3, 32, 32)


@pytest.mark.skipif(not os.environ.get("ZUPU_TAESD_REF"), reason="set ZUPU_TAESD_REF to a madebyollin/taesd checkout")
def test_taef2_equals_the_reference_on_real_images(monkeypatch):
    """Against madebyollin's own taesd.py (not copied here: ZUPU_TAESD_REF names a checkout of it)."""
    from zupu.hf.diffusion import load_taesd

    monkeypatch.syspath_prepend(os.environ["ZUPU_TAESD_REF"])
    import taesd

    from zupu import weights

    folder = weights.fetch("taef2")
    ref = taesd.TAESD(folder / "taef2_encoder.pth", folder / "taef2_decoder.pth").eval()
    ours = load_taesd()
    x = _real_images()
    with torch.no_grad():
        z, z_ref = ours.encode(x), ref.encoder(x)
        torch.testing.assert_close(z, z_ref, atol=1e-5, rtol=1e-5)
        assert z.shape == (4, 32, 4, 4)
        y = ours.decode(z)
        torch.testing.assert_close(y, ref.decoder(z_ref), atol=1e-5, rtol=1e-5)
    assert (y.clamp(0, 1) - x).abs().mean() < 0.1  # and it reconstructs them (0.07 at 32x32)


def test_taef2_loads_the_registered_weights_and_reconstructs_real_images(tmp_path):
    from zupu.hf.diffusion import load_taesd

    ours = load_taesd()
    x = _real_images()
    with torch.no_grad():
        y = ours(x).clamp(0, 1)
    err = (y - x).abs().mean()
    assert err < 0.1, err  # 0.07 measured; a random or wrongly loaded decoder is far off
    with pytest.raises(SettingError, match="multiples of 8"):
        ours.encode(x[:, :, :30])
    from zupu.checkpoint import load_model, save_model
    from zupu.models.diffusion import TinyAutoencoder, TinyAutoencoderConfig

    small = TinyAutoencoder(TinyAutoencoderConfig(latent_channels=4, width=16)).eval()
    save_model(small, tmp_path)  # no diffusers layout for it: zupu's own, and back
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path)(x), small(x))


# Learning ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_recipe_draws_what_it_is_asked_and_guidance_helps(tmp_path):
    """The quick fashion-ddpm run (about a minute on one core): its guided samples are recognised by the
    independent classifier at the quick milestone, more often than unguided ones, and are not copies."""
    from zupu.train import launch
    from zupu.train.threads import threads

    with threads(1):
        result = launch.train("diffusion", "fashion-ddpm", tmp_path, quick=True)
    m = result["metrics"]
    assert result["milestone"]["passed"], m
    assert m["sample_acc"] > m["sample_acc_w0"], m
    assert m["fd_floor"] < m["fd"], m  # the floor is below what the samples reach
    assert m["nearest_train_samples"] > 0.5 * m["nearest_train_test"], m
    assert all((tmp_path / f).is_file() for f in ("samples.png", "trajectory.png", "guidance.png"))


# Text to image: the latent pipeline (emoji-latent) -------------------------------------------------------


@pytest.fixture(scope="module")
def text_pipeline(tmp_path_factory):
    """A random tiny text-to-image pipeline (32px: 4x4 TAEF2 latents, a tiny CLIP), saved as a run saves it."""
    from zupu.hf.diffusion import load_taesd
    from zupu.models.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
    from zupu.models.diffusion import UNet, UNetConfig
    from zupu.sampling.latent import TextToImage
    from zupu.tokenizers.clip import CLIPTokenizer

    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, max_position_embeddings=16),
                           CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, image_size=16, patch_size=8),
                           projection_dim=8)).eval()
    unet = _randomise(UNet(UNetConfig(
        sample_size=4, in_channels=32, out_channels=32, block_out_channels=(16, 32), layers_per_block=1,
        norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
        mid_block_type="UNetMidBlock2DCrossAttn", attention_head_dim=2, cross_attention_dim=16))).eval()
    with torch.no_grad():
        unet.conv_out.weight.mul_(0.05)  # a random denoiser's output scaled down: the decoded images stay finite
    pipe = TextToImage(unet, clip.text_model, CLIPTokenizer.openai(), 16,
                       DDIMScheduler(beta_schedule="scaled_linear").save_config(), load_taesd(),
                       torch.linspace(-0.5, 0.5, 32), torch.linspace(0.5, 1.0, 32))
    out = tmp_path_factory.mktemp("pipeline")
    pipe.save(out, clip, {"member": "diffusion", "recipe": "emoji-latent", "seed": 0, "settings": {}})
    return pipe, out


def test_text_pipeline_saves_in_diffusers_layout_and_loads_back(text_pipeline):
    diffusers = need("diffusers")
    transformers = need("transformers")
    from zupu.sampling.latent import TextToImage

    pipe, out = text_pipeline
    back = TextToImage.load(out)
    prompts = ["grinning face", "red apple"]
    a = pipe.latents(prompts, steps=3, guidance=2.0, seed=1)
    torch.testing.assert_close(back.latents(prompts, steps=3, guidance=2.0, seed=1), a, atol=0, rtol=0)
    # diffusers reads the UNet and the scheduler, transformers the text encoder and its tokenizer
    theirs = diffusers.UNet2DConditionModel.from_pretrained(out / "unet").eval()
    states, mask = pipe.encode_text(prompts)
    x, t = torch.randn(2, 32, 4, 4), torch.tensor([5, 901])
    with torch.no_grad():
        want = theirs(x, t, states, encoder_attention_mask=mask).sample
        torch.testing.assert_close(pipe.unet(x, t, states, encoder_attention_mask=mask), want, atol=1e-5, rtol=1e-5)
    assert type(diffusers.DDIMScheduler.from_pretrained(out / "scheduler")).__name__ == "DDIMScheduler"
    tok = transformers.CLIPTokenizer.from_pretrained(out / "text_encoder")
    ids = tok(prompts, padding="max_length", max_length=16, return_tensors="pt")
    torch.testing.assert_close(ids["input_ids"], pipe.tokenizer(prompts, context_length=16)["input_ids"])
    text = transformers.CLIPModel.from_pretrained(out / "text_encoder").eval().text_model
    with torch.no_grad():
        torch.testing.assert_close(text(**ids).last_hidden_state, states, atol=1e-5, rtol=1e-5)


def test_text_pipeline_guides_inpaints_and_outpaints(text_pipeline):
    pipe, _ = text_pipeline
    prompts = ["cat face", "cat face"]
    plain = pipe.latents(prompts, steps=3, guidance=0.0, seed=2)
    assert not torch.allclose(pipe.latents(prompts, steps=3, guidance=3.0, seed=2), plain)
    g = torch.Generator().manual_seed(0)
    init = torch.rand(1, 3, 32, 32, generator=g)
    hole = torch.zeros(1, 1, 32, 32)
    hole[..., 8:24, 8:24] = 1
    out = pipe(prompts, steps=3, guidance=2.0, init=init, mask=hole)
    assert out.shape == (2, 3, 32, 32)
    assert torch.equal(out * (1 - hole), init.expand(2, -1, -1, -1) * (1 - hole))  # kept pixels exactly
    assert not torch.allclose(out * hole, init * hole)
    canvas, outside = torch.ones(1, 3, 64, 64), torch.ones(1, 1, 64, 64)  # outpainting: a 16px border
    canvas[..., 16:48, 16:48], outside[..., 16:48, 16:48] = init, 0
    wide = pipe(prompts[:1], steps=3, init=canvas, mask=outside)
    assert wide.shape == (1, 3, 64, 64) and torch.equal(wide[..., 16:48, 16:48], init)
    for kw, match in ((dict(init=init[:, :2]), "must be .* RGB"), (dict(init=init[..., :28, :28]), "multiples of 8"),
                      (dict(mask=hole), "a mask needs an init image"),
                      (dict(init=init, mask=hole[..., :16]), r"mask must be \(1 or 2, 1, 32, 32\)"),
                      (dict(init=torch.ones(1, 3, 40, 40)), "multiple of 16 pixels")):
        with pytest.raises(SettingError, match=match):
            pipe(prompts, steps=2, **kw)


def test_zupu_draw_draws_from_text_and_names_each_bad_input(text_pipeline, tmp_path, monkeypatch):
    from PIL import Image

    from zupu.apps.draw import draw
    from zupu.cli import main

    _, run = text_pipeline
    monkeypatch.setenv("ZUPU_PROGRESS", "0")
    out = tmp_path / "draw.png"
    assert main(["draw", str(run), "--prompt", "a grinning cat", "--steps", "2", "--n", "2", "--out", str(out)]) == 0
    assert Image.open(out).size == (2 * 32 * 4, 32 * 4) and Image.open(out).mode == "RGB"
    init = _png(tmp_path / "init.png", (32, 32), "RGB")
    assert draw(run, "cat", steps=2, n=1, init=init, outpaint=8).shape == (1, 3, 48, 48)
    assert draw(run, "cat", steps=2, n=1, init=init, mask=_png(tmp_path / "m.png", (32, 32))).shape == (1, 3, 32, 32)
    bad = [(dict(label=None), "give --prompt"), (dict(init=_png(tmp_path / "g.png", (32, 32))), "is mode L.*RGB"),
           (dict(outpaint=8), "need --init"), (dict(init=init, outpaint=4), "multiple of 16 pixels"),
           (dict(init=init, outpaint=-8), "--outpaint must be >= 0")]
    for kw, match in bad:
        with pytest.raises(SettingError, match=match):
            draw(run, **{"label": "cat", "steps": 2, "n": 1, **kw})


def test_a_resumed_run_continues_the_same_ema(tmp_path, monkeypatch):
    """The EMA weights (what a run saves) after an interrupted + resumed run equal an uninterrupted run's."""
    from safetensors.torch import load_file

    from zupu.recipes.diffusion import FashionDDPM
    from zupu.train import launch
    from zupu.train.trainer import Trainer

    settings = {**FashionDDPM.tiny, "steps": 6, "ema_decay": 0.5}
    launch.train("diffusion", "fashion-ddpm", tmp_path / "full", overrides=settings)
    original = Trainer.__init__

    def interrupted(self, *args, **kwargs):
        def stop(step, trainer):
            if step == 3:
                raise KeyboardInterrupt

        kwargs["callbacks"] = (*kwargs.get("callbacks", ()), stop)
        original(self, *args, **kwargs)
        monkeypatch.setattr(Trainer, "__init__", original)

    monkeypatch.setattr(Trainer, "__init__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        launch.train("diffusion", "fashion-ddpm", tmp_path / "cut", overrides=settings)
    assert any(k.startswith("callback.0.") for k in load_file(tmp_path / "cut" / "resume.safetensors"))
    launch.train("diffusion", "fashion-ddpm", tmp_path / "cut", resume=True)
    full, cut = (load_file(tmp_path / d / "diffusion_pytorch_model.safetensors") for d in ("full", "cut"))
    assert full.keys() == cut.keys() and all(torch.equal(full[k], cut[k]) for k in full)


def test_frechet_distance_equals_torchmetrics_fid_with_the_judge_as_its_network():
    """torchmetrics' FrechetInceptionDistance takes a custom feature network: with the (RGB) judge's features
    in place of Inception, it gives what the recipes report."""
    need("torchmetrics")
    from torchmetrics.image.fid import FrechetInceptionDistance

    from zupu.recipes.diffusion import Judge, frechet_distance

    torch.manual_seed(0)
    judge = Judge(32, 3, 10).eval()

    class Features(torch.nn.Module):
        def forward(self, x):
            return judge.features(x)

    fid = FrechetInceptionDistance(feature=Features(), normalize=True, input_img_size=(3, 32, 32))
    real, fake = torch.rand(200, 3, 32, 32), torch.rand(150, 3, 32, 32) ** 2
    fid.update(real, real=True)
    fid.update(fake, real=False)
    with torch.no_grad():
        want = float(fid.compute())
        assert frechet_distance(judge.features(real), judge.features(fake)) == pytest.approx(want, rel=1e-5)
