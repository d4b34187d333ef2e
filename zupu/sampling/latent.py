"""Text to image in a latent space (Rombach et al. 2022, https://arxiv.org/abs/2112.10752): Stable Diffusion's
pipeline, small.

    prompt --CLIP text encoder--> states (B, T, D) --cross-attention--> UNet denoises z_T ~ N(0, I) to z_0
    (DDIM, classifier-free guidance against the empty prompt's states) --TAEF2 decoder--> image

The latents are the autoencoder's, standardised per channel by the training set's mean and spread (Stable
Diffusion's single `scaling_factor`, per channel), so the UNet sees unit-variance inputs. Inpainting and
outpainting are the masked sampling of `denoise` in latent space: the pixel mask is widened to whole latent
cells (8x8 pixels), and the kept pixels are pasted back after decoding, as diffusers' inpainting pipelines do.

A saved pipeline is a folder in diffusers' layout (`zupu.checkpoint.save_parts`): `unet/` (a
UNet2DConditionModel diffusers loads), `text_encoder/` (a CLIPModel transformers loads, with its tokenizer's
vocab.json + merges.txt), `scheduler/`; the autoencoder is not copied but named, with the latent statistics,
under model_index.json's "_zupu_vae" (the weights registry's verified `taef2`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zupu.errors import CheckpointError, SettingError
from zupu.sampling.denoise import denoise
from zupu.sampling.schedulers import scheduler_from_config
from zupu.train.device import of, to_device

VAE_KEY = "_zupu_vae"
CELL = 8  # pixels per latent cell, each side: TAEF2's three halvings


class TextToImage:
    """`pipe(prompts, steps, guidance, seed, init=, strength=, mask=)` -> images (B, 3, H, W) in [0, 1]."""

    def __init__(self, unet: nn.Module, text_model: nn.Module, tokenizer: Any, context: int,
                 scheduler: dict[str, Any], vae: nn.Module, latent_mean: torch.Tensor, latent_std: torch.Tensor):
        self.unet, self.text_model, self.tokenizer, self.context = unet, text_model, tokenizer, context
        self.scheduler_config, self.vae = scheduler, vae
        self.mean = torch.as_tensor(latent_mean, dtype=torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)
        self.std = torch.as_tensor(latent_std, dtype=torch.float32).view(1, -1, 1, 1)
        self.size = unet.config.sample_size * CELL  # the pixels the UNet was trained on, each side

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TextToImage:
        """A pipeline folder as `save` writes it (a run of `zupu train diffusion --recipe emoji-latent`)."""
        from zupu.checkpoint import MODEL_INDEX, load_parts, read_config
        from zupu.hf.diffusion import load_taesd
        from zupu.models.clip import CLIP
        from zupu.tokenizers.clip import CLIPTokenizer

        folder = Path(folder)
        parts = load_parts(folder)
        vae = read_config(folder / MODEL_INDEX).get(VAE_KEY)
        clip = parts.get("text_encoder")
        if not isinstance(vae, dict) or not isinstance(clip, CLIP) or "unet" not in parts:
            raise CheckpointError(f"{folder / MODEL_INDEX} is not a text-to-image pipeline: it needs parts unet, "
                                  f"text_encoder (a CLIP) and scheduler, and {VAE_KEY} naming the autoencoder")
        return cls(parts["unet"], clip.text_model.eval(), CLIPTokenizer.from_directory(folder / "text_encoder"),
                   clip.config.text_config.max_position_embeddings, parts["scheduler"],
                   load_taesd(name=vae["weights"]), torch.tensor(vae["latent_mean"]), torch.tensor(vae["latent_std"]))

    def save(self, out: str | os.PathLike, clip: nn.Module, meta: dict[str, Any], vae_weights: str = "taef2") -> None:
        """Write the folder `load` reads; `clip` is the whole CLIP whose text tower this pipeline reads."""
        from zupu.checkpoint import save_parts

        out = Path(out)
        save_parts({"unet": self.unet, "text_encoder": clip, "scheduler": self.scheduler_config}, out,
                   "ZupuTextToImagePipeline", meta,
                   extra={VAE_KEY: {"weights": vae_weights, "latent_mean": self.mean.flatten().tolist(),
                                    "latent_std": self.std.flatten().tolist()}})
        self.tokenizer.save(out / "text_encoder")

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> the text encoder's states (B, T, D) and their attention mask (B, T)."""
        batch = self.tokenizer(prompts, context_length=self.context, truncation=True)
        ids, mask = to_device((batch["input_ids"], batch["attention_mask"]), of(self.text_model))
        return self.text_model(ids, mask), mask

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> standardised latents (B, C, H/8, W/8), on the autoencoder's device."""
        device = of(self.vae)
        return (self.vae.encode(images.to(device)) - self.mean.to(device)) / self.std.to(device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Standardised latents -> images (B, 3, 8h, 8w) in [0, 1], on the autoencoder's device."""
        device = of(self.vae)
        return self.vae.decode(latents.to(device) * self.std.to(device) + self.mean.to(device)).clamp(0, 1)

    @torch.no_grad()
    def latents(self, prompts: list[str], steps: int = 50, guidance: float = 3.0, seed: int = 0,
                size: tuple[int, int] | None = None, init: torch.Tensor | None = None, strength: float = 1.0,
                mask: torch.Tensor | None = None, trajectory: list[torch.Tensor] | None = None,
                states: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Standardised latents z_0 (B, C, h, w) for `prompts` (or their precomputed `states`), from seed `seed`.
        `init` (latents like the output) with `strength` < 1 is image-to-image, `mask` (B or 1, 1, h, w: 1 where
        to draw) inpainting; `size` (h, w) in latent cells, default the training size."""
        h, w = size or (self.unet.config.sample_size,) * 2
        factor = 2 ** (len(self.unet.config.block_out_channels) - 1)
        if h % factor or w % factor:
            raise SettingError(f"the image must be a multiple of {CELL * factor} pixels each side for this UNet, "
                               f"got {h * CELL}x{w * CELL}")
        device = of(self.unet)  # the text states, the start and the noise (drawn on the host: a seed gives the same
        # drawing on every device) join the UNet where it is
        text, text_mask = to_device(states if states is not None else self.encode_text(prompts), device)
        null, null_mask = to_device(self.encode_text([""]), device)
        init, mask = to_device((init, mask), device)
        n = len(text)
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(n, self.unet.config.in_channels, h, w, generator=g).to(device)
        return denoise(self.unet, scheduler_from_config(self.scheduler_config), noise, steps, guidance=guidance,
                       generator=g, init=init, strength=strength, mask=mask, trajectory=trajectory,
                       condition={"encoder_hidden_states": text, "encoder_attention_mask": text_mask},
                       null_condition={"encoder_hidden_states": null.expand(n, -1, -1),
                                       "encoder_attention_mask": null_mask.expand(n, -1)}, desc="draw")

    def __call__(self, prompts: list[str], steps: int = 50, guidance: float = 3.0, seed: int = 0,
                 init: torch.Tensor | None = None, strength: float = 0.7, mask: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1]. `init` (B or 1, 3, H, W) in [0, 1] alone is image-to-image at
        `strength`; with `mask` (B or 1, 1, H, W), 1 where to draw, it is inpainting (outpainting: `init` on a
        larger canvas, the mask 1 outside it). Without `init`, the training size."""
        n = len(prompts)
        if n == 0:
            raise SettingError("give at least one prompt")
        if init is None:
            if mask is not None:
                raise SettingError("a mask needs an init image: the one whose unmasked pixels are kept")
            return self.decode(self.latents(prompts, steps, guidance, seed))
        if init.dim() != 4 or init.shape[1] != 3 or init.shape[0] not in (1, n):
            raise SettingError(f"the init image must be (1 or {n}, 3, H, W) RGB in [0, 1], got {tuple(init.shape)}")
        H, W = init.shape[2:]
        if H % CELL or W % CELL:
            raise SettingError(f"the init image is {W}x{H}: its sides must be multiples of {CELL} (one latent cell)")
        if mask is not None and (mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (H, W)
                                 or mask.shape[0] not in (1, n)):
            raise SettingError(f"the mask must be (1 or {n}, 1, {H}, {W}) like the init image, got "
                               f"{tuple(mask.shape)}")
        init = init.expand(n, -1, -1, -1)
        z0 = self.encode(init)
        cells = None if mask is None else F.max_pool2d(mask.float(), CELL)  # a latent cell is redrawn if any pixel is
        z = self.latents(prompts, steps, guidance, seed, size=(H // CELL, W // CELL), init=z0,
                         strength=1.0 if mask is not None else strength, mask=cells)
        out = self.decode(z)
        if mask is None:
            return out
        mask, init = to_device((mask, init), out.device)
        return mask * out + (1 - mask) * init  # the kept pixels exactly as given
