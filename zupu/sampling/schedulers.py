"""Noise schedulers for diffusion models, in diffusers' split: a model predicts, a scheduler steps.

DDPM (J. Ho, A. Jain, P. Abbeel 2020, https://arxiv.org/abs/2006.11239). A forward process adds Gaussian
noise in T steps with variances beta_t; with alpha_t = 1 - beta_t and abar_t = prod_{s<=t} alpha_s,

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)                                     (`add_noise`)

and the reverse step samples the posterior q(x_{t-1} | x_t, x_0) with x_0 predicted by the model:

    mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t
    var  = (1 - abar_{t-1}) / (1 - abar_t) beta_t  ("fixed_small"),  or beta_t ("fixed_large")

DDIM (J. Song, C. Meng, S. Ermon 2021, https://arxiv.org/abs/2010.02502, eq. 12) jumps between any two
steps of a shorter sequence, deterministically at eta = 0:

    x_prev = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z,
    sigma  = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)

The model may predict the noise eps ("epsilon"), x_0 ("sample") or v = sqrt(abar) eps - sqrt(1 - abar) x_0
("v_prediction", Salimans & Ho 2022). The constructors take diffusers' keyword arguments (so a
`scheduler_config.json` builds one) and the methods have its signatures; outputs equal diffusers' for
the same config and noise (tests/test_diffusion.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zupu.errors import SettingError, UnknownName

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
PREDICTIONS = ("epsilon", "sample", "v_prediction")
SPACINGS = ("leading", "trailing", "linspace")


@dataclass
class SchedulerOutput:
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def cosine_betas(n: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021's "squaredcos_cap_v2": abar(t) = cos^2((t + 0.008) / 1.008 * pi / 2)."""
    def abar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), max_beta) for i in range(n)], dtype=torch.float32)


def zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023 (https://arxiv.org/abs/2305.08891, algorithm 1): shift and scale sqrt(abar) so the last step
    is pure noise (abar_T = 0) while the first keeps its value."""
    root = torch.cumprod(1.0 - betas, 0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    abar = root ** 2
    return 1 - torch.cat([abar[0:1], abar[1:] / abar[:-1]])


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.flatten().reshape(-1, *([1] * (like.dim() - 1)))  # (N, 1, 1, ...) against (N, C, H, W)


class _Scheduler:
    """What DDPM and DDIM share: the betas, timestep spacing, forward noising and x_0 from the model's output."""

    _class_name = ""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: list[float] | None = None, clip_sample: bool = True,
                 prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, clip_sample_range: float = 1.0,
                 sample_max_value: float = 1.0, timestep_spacing: str = "leading", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False):
        for kind, value, known in (("beta_schedule", beta_schedule, BETA_SCHEDULES),
                                   ("prediction_type", prediction_type, PREDICTIONS),
                                   ("timestep_spacing", timestep_spacing, SPACINGS)):
            if value not in known:
                raise UnknownName(kind, value, list(known))
        if num_train_timesteps < 1:
            raise SettingError(f"num_train_timesteps must be at least 1, got {num_train_timesteps}")
        self.config: dict[str, Any] = dict(
            num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
            beta_schedule=beta_schedule, trained_betas=trained_betas, clip_sample=clip_sample,
            prediction_type=prediction_type, thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio, clip_sample_range=clip_sample_range,
            sample_max_value=sample_max_value, timestep_spacing=timestep_spacing, steps_offset=steps_offset,
            rescale_betas_zero_snr=rescale_betas_zero_snr)
        n = num_train_timesteps
        if trained_betas is not None:
            betas = torch.tensor(trained_betas, dtype=torch.float32)
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
        elif beta_schedule == "scaled_linear":  # Stable Diffusion's: linear in sqrt(beta)
            betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float32) ** 2
        elif beta_schedule == "squaredcos_cap_v2":
            betas = cosine_betas(n)
        else:  # sigmoid
            betas = torch.sigmoid(torch.linspace(-6, 6, n)) * (beta_end - beta_start) + beta_start
        self.betas = zero_terminal_snr(betas) if rescale_betas_zero_snr else betas
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(n - 1, -1, -1)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _Scheduler:
        """Build from a `scheduler_config.json` object (diffusers' keys; `_class_name` etc. are skipped)."""
        return cls(**{k: v for k, v in config.items() if not k.startswith("_")})

    def save_config(self) -> dict[str, Any]:
        """The constructor arguments with `_class_name`: what `zupu.checkpoint.save_parts` writes."""
        return {"_class_name": self._class_name, **self.config}

    def __len__(self) -> int:
        return self.config["num_train_timesteps"]

    def spaced_timesteps(self, num_inference_steps: int) -> np.ndarray:
        """`num_inference_steps` of the training steps, descending, spaced as `timestep_spacing` says."""
        n = self.config["num_train_timesteps"]
        if not 1 <= num_inference_steps <= n:
            raise SettingError(f"num_inference_steps must be between 1 and num_train_timesteps ({n}), "
                               f"got {num_inference_steps}")
        spacing = self.config["timestep_spacing"]
        if spacing == "linspace":
            return np.linspace(0, n - 1, num_inference_steps).round()[::-1].copy().astype(np.int64)
        if spacing == "leading":  # 0, r, 2r, ... shifted by steps_offset
            ratio = n // num_inference_steps
            return (np.arange(num_inference_steps) * ratio).round()[::-1].astype(np.int64) + self.config["steps_offset"]
        ratio = n / num_inference_steps  # trailing: ends on the last training step, n - 1
        return np.round(np.arange(n, 0, -ratio)).astype(np.int64) - 1

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.from_numpy(self.spaced_timesteps(num_inference_steps)).to(device)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        return sample  # DDPM and DDIM feed x_t unscaled (samplers in sigma space divide it)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, one timestep per sample."""
        x0 = original_samples
        abar = self.alphas_cumprod.to(x0.device, x0.dtype)[timesteps.to(x0.device)]
        return _broadcast(abar ** 0.5, x0) * x0 + _broadcast((1 - abar) ** 0.5, x0) * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction target v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0."""
        abar = self.alphas_cumprod.to(sample.device, sample.dtype)[timesteps.to(sample.device)]
        return _broadcast(abar ** 0.5, sample) * noise - _broadcast((1 - abar) ** 0.5, sample) * sample

    def _x0_and_eps(self, model_output: torch.Tensor, sample: torch.Tensor,
                    abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kind, beta = self.config["prediction_type"], 1 - abar
        if kind == "epsilon":
            return (sample - beta ** 0.5 * model_output) / abar ** 0.5, model_output
        if kind == "sample":
            return model_output, (sample - abar ** 0.5 * model_output) / beta ** 0.5
        return abar ** 0.5 * sample - beta ** 0.5 * model_output, abar ** 0.5 * model_output + beta ** 0.5 * sample

    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding (Imagen, Saharia et al. 2022): clamp each x_0 to its own `ratio` quantile of |x_0|
        (at least 1, at most sample_max_value) and rescale; otherwise plain clipping to clip_sample_range."""
        c = self.config
        if c["thresholding"]:
            flat = x0.float().reshape(x0.size(0), -1)  # (N, C*H*W): quantile needs float32
            s = torch.quantile(flat.abs(), c["dynamic_thresholding_ratio"], dim=1)
            s = s.clamp(min=1, max=c["sample_max_value"]).unsqueeze(1)
            return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(x0.dtype)
        if c["clip_sample"]:
            return x0.clamp(-c["clip_sample_range"], c["clip_sample_range"])
        return x0

    @staticmethod
    def _noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # drawn where the generator lives (a host generator gives a seed the same noise on every device), then moved
        where = like.device if generator is None else generator.device
        return torch.randn(like.shape, generator=generator, device=where, dtype=like.dtype).to(like.device)


class DDPMScheduler(_Scheduler):
    """Ancestral sampling of DDPM; `set_timesteps(n)` with n < num_train_timesteps strides over the chain
    (each step then uses the betas implied by the two alpha-bars it joins)."""

    _class_name = "DDPMScheduler"
    VARIANCES = ("fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range")

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: list[float] | None = None,
                 variance_type: str = "fixed_small", **kwargs: Any):
        if variance_type not in self.VARIANCES:
            raise UnknownName("variance_type", variance_type, list(self.VARIANCES))
        super().__init__(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, **kwargs)
        self.config["variance_type"] = variance_type
        self.custom_timesteps = False

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[int] | None = None) -> None:
        if (num_inference_steps is None) == (timesteps is None):
            raise SettingError("set_timesteps takes one of num_inference_steps or timesteps")
        if timesteps is None:
            self.custom_timesteps = False
            return super().set_timesteps(num_inference_steps, device)
        if any(b >= a for a, b in zip(timesteps, timesteps[1:], strict=False)) or \
                timesteps[0] >= len(self) or timesteps[-1] < 0:
            raise SettingError(f"timesteps must descend within [0, {len(self)}), got {list(timesteps)}")
        self.custom_timesteps, self.num_inference_steps = True, None
        self.timesteps = torch.tensor(timesteps, dtype=torch.int64, device=device)

    def previous_timestep(self, timestep: int) -> int:
        if self.custom_timesteps or self.num_inference_steps:
            index = int((self.timesteps == timestep).nonzero()[0, 0])
            return -1 if index == len(self.timesteps) - 1 else int(self.timesteps[index + 1])
        return int(timestep) - 1

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor,
             generator: torch.Generator | None = None) -> SchedulerOutput:
        t = int(timestep)
        prev = self.previous_timestep(t)
        learned = self.config["variance_type"] in ("learned", "learned_range")
        predicted_variance = None
        if learned and model_output.shape[1] == 2 * sample.shape[1]:  # the model's second half is its variance
            model_output, predicted_variance = model_output.split(sample.shape[1], 1)
        abar = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0)
        alpha, beta = abar / abar_prev, 1 - abar / abar_prev  # of the (possibly strided) step prev -> t
        x0 = self._clip(self._x0_and_eps(model_output, sample, abar)[0])
        prev_sample = (abar_prev ** 0.5 * beta) / (1 - abar) * x0 + alpha ** 0.5 * (1 - abar_prev) / (1 - abar) * sample
        if t > 0:
            noise = self._noise(model_output, generator)
            small = torch.clamp((1 - abar_prev) / (1 - abar) * beta, min=1e-20)  # the posterior's variance
            kind = self.config["variance_type"]
            if kind == "fixed_small":
                std = small ** 0.5
            elif kind == "fixed_small_log":
                std = torch.exp(0.5 * torch.log(small))
            elif kind == "fixed_large":
                std = beta ** 0.5
            elif kind == "learned":
                std = predicted_variance ** 0.5
            else:  # learned_range: the model interpolates log-variance between the two bounds
                frac = (predicted_variance + 1) / 2
                std = torch.exp(0.5 * (frac * torch.log(beta) + (1 - frac) * torch.log(small)))
            prev_sample = prev_sample + std * noise
        return SchedulerOutput(prev_sample, x0)


class DDIMScheduler(_Scheduler):
    """DDIM: deterministic at eta = 0, so 50 steps stand in for the 1000 DDPM was trained with."""

    _class_name = "DDIMScheduler"

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: list[float] | None = None, clip_sample: bool = True,
                 set_alpha_to_one: bool = True, **kwargs: Any):
        super().__init__(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, clip_sample, **kwargs)
        self.config["set_alpha_to_one"] = set_alpha_to_one
        # the alpha-bar "before" step 0: 1 (a clean image), or abar_0 as the original DDIM code used
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator: torch.Generator | None = None,
             variance_noise: torch.Tensor | None = None) -> SchedulerOutput:
        if self.num_inference_steps is None:
            raise SettingError("call set_timesteps(n) before step: DDIM steps between the n chosen timesteps")
        if eta < 0:
            raise SettingError(f"eta must be >= 0, got {eta}")
        t = int(timestep)
        prev = t - len(self) // self.num_inference_steps
        abar = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod
        x0, eps = self._x0_and_eps(model_output, sample, abar)
        x0 = self._clip(x0)
        sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)) ** 0.5
        if use_clipped_model_output:  # re-derive eps from the clipped x_0
            eps = (sample - abar ** 0.5 * x0) / (1 - abar) ** 0.5
        prev_sample = abar_prev ** 0.5 * x0 + (1 - abar_prev - sigma ** 2) ** 0.5 * eps
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise SettingError("pass a generator or variance_noise to DDIM's step, not both")
            noise = variance_noise if variance_noise is not None else self._noise(model_output, generator)
            prev_sample = prev_sample + sigma * noise
        return SchedulerOutput(prev_sample, x0)


SCHEDULERS: dict[str, type[_Scheduler]] = {"DDPMScheduler": DDPMScheduler, "DDIMScheduler": DDIMScheduler}


def scheduler_from_config(config: dict[str, Any]) -> _Scheduler:
    """A scheduler from a `scheduler_config.json` object, by its `_class_name`."""
    name = config.get("_class_name", "")
    if name not in SCHEDULERS:
        raise UnknownName("scheduler", str(name), list(SCHEDULERS))
    return SCHEDULERS[name].from_config(config)
