"""diffusion: the schedulers and the UNet against diffusers, the recipe's pieces, `zupu draw`'s errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.reference import need
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
