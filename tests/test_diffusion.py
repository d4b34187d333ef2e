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
