"""Drawing with a trained denoiser: the sampling loop, classifier-free guidance, image-to-image and inpainting.

Classifier-free guidance (J. Ho, T. Salimans 2021, https://arxiv.org/abs/2207.12598, eq. 6): a model trained
with its condition sometimes dropped (replaced by a null label) predicts both eps(x, c) and eps(x, null);
sampling follows

    eps~ = (1 + w) eps(x_t, c) - w eps(x_t, null),

w = 0 the plain conditional model, w > 0 pushes samples toward what makes c likely (sharper, less diverse).
(diffusers' `guidance_scale` is 1 + w.)

Image-to-image (SDEdit, Meng et al. 2021, https://arxiv.org/abs/2108.01073): noise a given image to the step
`strength` of the way up the schedule, then denoise from there: strength 1 ignores it, 0 returns it.
Inpainting by masked sampling (as in RePaint, Lugmayr et al. 2022, without its resampling): after each step
the pixels outside the mask are replaced by the given image noised to the new step, so the model fills the
masked part to agree with the rest.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from zupu.errors import SettingError
from zupu.progress import progress


def denoise(unet: Callable[..., torch.Tensor], scheduler, noise: torch.Tensor, steps: int,
            labels: torch.Tensor | None = None, null_label: int | None = None, guidance: float = 0.0,
            generator: torch.Generator | None = None, init: torch.Tensor | None = None, strength: float = 1.0,
            mask: torch.Tensor | None = None, trajectory: list[torch.Tensor] | None = None,
            desc: str | None = None, condition: dict[str, torch.Tensor] | None = None,
            null_condition: dict[str, torch.Tensor] | None = None,
            step_kwargs: dict | None = None) -> torch.Tensor:
    """Run `scheduler` from `noise` (B, C, H, W) for `steps` steps (fewer with img2img) and return x_0.

    `labels` (B,) condition a class-conditional `unet`; guidance w > 0 also needs `null_label`, the label the
    model was trained with for "no condition". Any other condition goes in `condition`, keyword arguments of
    `unet` with one row per sample (a text's `encoder_hidden_states` and `encoder_attention_mask`), and its
    "no condition" in `null_condition`, the same keys and shapes (the empty caption's states). `init`
    (B, C, H, W) with `strength` < 1 is image-to-image; `mask` (B or 1, 1, H, W), 1 where to draw and 0 where
    to keep `init`, is inpainting. `trajectory`, if a list, receives the model's x_0 estimate after every
    step (the denoising trajectory figure). `step_kwargs` go to every `scheduler.step` (diffusers' pipelines'
    `eta`, `use_clipped_model_output`)."""
    if steps < 1:
        raise SettingError(f"steps must be at least 1, got {steps}")
    if guidance < 0:
        raise SettingError(f"guidance must be >= 0 (0 is the plain conditional model), got {guidance}")
    cond = dict(condition or {}) | ({"class_labels": labels} if labels is not None else {})
    null = dict(null_condition or {})
    if labels is not None and null_label is not None:
        null["class_labels"] = torch.full_like(labels, null_label)
    if guidance > 0 and (not cond or null.keys() != cond.keys()):
        raise SettingError("classifier-free guidance needs a condition (labels, or `condition`) and the model's "
                           "'no condition' for each of its keys (null_label, or `null_condition`)")
    if not 0.0 <= strength <= 1.0:
        raise SettingError(f"strength must be between 0 and 1, got {strength}")
    if (strength < 1.0 or mask is not None) and init is None:
        raise SettingError("strength < 1 and a mask both need an init image")
    if init is not None and init.shape != noise.shape:
        raise SettingError(f"the init image is {tuple(init.shape)}, the samples {tuple(noise.shape)}: give an image "
                           "of the model's size and channels")
    if mask is not None and (mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2:] != noise.shape[2:]):
        raise SettingError(f"the mask must be (B, 1, {noise.shape[2]}, {noise.shape[3]}) like the image, "
                           f"got {tuple(mask.shape)}")
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    if init is not None and strength < 1.0:  # start part of the way down, from the noised image
        start = steps - min(int(steps * strength), steps)
        timesteps = timesteps[start:]
        if len(timesteps) == 0:
            return init.clone()
        x = scheduler.add_noise(init, noise, timesteps[:1].expand(len(init)))
    else:
        x = noise * scheduler.init_noise_sigma
    keep_noise = None
    if mask is not None:  # drawn where the generator lives, as the scheduler's own noise is
        where = noise.device if generator is None else generator.device
        keep_noise = torch.randn(noise.shape, generator=generator, device=where, dtype=noise.dtype).to(noise.device)
    for i, t in enumerate(progress(iterable=timesteps.tolist(), desc=desc or "denoise", unit="step", leave=False)):
        model_in = scheduler.scale_model_input(x, t)
        if guidance > 0:  # the conditional and the unconditional prediction in one batch
            both = unet(torch.cat([model_in, model_in]), t, **{k: torch.cat([cond[k], null[k]]) for k in cond})
            with_c, free = both.chunk(2)
            out = (1 + guidance) * with_c - guidance * free
        else:
            out = unet(model_in, t, **cond)
        step = scheduler.step(out, t, x, generator=generator, **(step_kwargs or {}))
        x = step.prev_sample
        if mask is not None:
            after = timesteps[i + 1:i + 2]
            known = init if len(after) == 0 else scheduler.add_noise(init, keep_noise, after.expand(len(init)))
            x = mask * x + (1 - mask) * known
        if trajectory is not None:
            trajectory.append(step.pred_original_sample)
    return x
