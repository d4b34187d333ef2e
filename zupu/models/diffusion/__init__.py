"""diffusion: DDPM / DDIM / latent diffusion. The UNet lives in `unet.py`; the noise schedulers in
`zupu.sampling.schedulers` (what is not a layer)."""

from zupu.models.diffusion.unet import PRESETS, UNet, UNetConfig

__all__ = ["PRESETS", "UNet", "UNetConfig"]
