"""diffusion: DDPM / DDIM / latent diffusion. The UNet lives in `unet.py`, the tiny latent autoencoder (TAEF2)
in `vae.py`; the noise schedulers in `zupu.sampling.schedulers` (what is not a layer)."""

from zupu.models.diffusion.unet import PRESETS, UNet, UNetConfig
from zupu.models.diffusion.vae import TinyAutoencoder, TinyAutoencoderConfig

__all__ = ["PRESETS", "TinyAutoencoder", "TinyAutoencoderConfig", "UNet", "UNetConfig"]
