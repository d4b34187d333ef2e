"""The denoising UNet of DDPM and Stable Diffusion: x_t and t (and a text or a class) -> the predicted noise.

O. Ronneberger et al. 2015 (https://arxiv.org/abs/1505.04597) gave the shape: a contracting path, an
expanding one, and skip connections between equal resolutions. Ho et al. 2020 (DDPM,
https://arxiv.org/abs/2006.11239, appendix B) made it a denoiser: residual blocks whose features get the
timestep's sinusoidal embedding added, GroupNorm, and self-attention at low resolution. Rombach et al.
2022 (latent diffusion, https://arxiv.org/abs/2112.10752, section 3.3) let it read a text encoder's states
through cross-attention, softmax(Q(z) K(text)^T / sqrt(d)) V(text), inside a Transformer block at each
attention resolution. A class label (Fashion-MNIST's) is an embedding added to the time embedding.

One class covers both of diffusers' (same block names, so checkpoints are a key map, `zupu.hf.diffusion`):
`cross_attention_dim=None` is a `UNet2DModel` (Attn* blocks: self-attention with `attention_head_dim` wide
heads), otherwise a `UNet2DConditionModel` (CrossAttn* blocks: Transformer blocks with `attention_head_dim`
heads, which is diffusers' historical meaning of that field there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zupu.errors import SettingError
from zupu.nn import Block, MultiHeadAttention, SwiGLU, timestep_embedding

DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D", "CrossAttnDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "CrossAttnUpBlock2D")
MID_BLOCKS = ("UNetMidBlock2D", "UNetMidBlock2DCrossAttn")


@dataclass
class UNetConfig:
    """Field names as in diffusers' UNet2DModel / UNet2DConditionModel config.json."""

    sample_size: int = 32
    in_channels: int = 1
    out_channels: int = 1
    block_out_channels: tuple[int, ...] = (32, 64)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D")
    mid_block_type: str = "UNetMidBlock2D"
    layers_per_block: int = 2
    attention_head_dim: int | tuple[int, ...] | None = 8
    num_attention_heads: int | tuple[int, ...] | None = None
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    cross_attention_dim: int | None = None  # None: a UNet2DModel; a width: UNet2DConditionModel
    transformer_layers_per_block: int = 1
    use_linear_projection: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    num_class_embeds: int | None = None
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    center_input_sample: bool = False
    add_attention: bool = True  # UNet2DModel's switch for its middle self-attention
    dropout: float = 0.0

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)
        self.down_block_types, self.up_block_types = tuple(self.down_block_types), tuple(self.up_block_types)
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise SettingError(f"down_block_types ({len(self.down_block_types)}) and up_block_types "
                               f"({len(self.up_block_types)}) need one entry per block_out_channels ({n})")
        cross = self.cross_attention_dim is not None
        for kind, known in ((self.down_block_types, DOWN_BLOCKS), (self.up_block_types, UP_BLOCKS),
                            ((self.mid_block_type,), MID_BLOCKS)):
            for b in kind:
                if b not in known:
                    raise SettingError(f"block type {b!r} is not one zupu's UNet has; known: {', '.join(known)}")
                if ("CrossAttn" in b) != cross and "Attn" in b:
                    need = "needs" if "CrossAttn" in b else "needs no"
                    raise SettingError(f"{b} {need} cross_attention_dim: cross-attention "
                                       "blocks belong to UNet2DConditionModel, self-attention ones to UNet2DModel")
        if cross and self.mid_block_type != "UNetMidBlock2DCrossAttn":
            raise SettingError("a UNet with cross_attention_dim has mid_block_type 'UNetMidBlock2DCrossAttn'")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise SettingError(f"block_out_channels {c} is not divisible by norm_num_groups {self.norm_num_groups}")

    def heads(self, i: int, channels: int) -> int:
        """How many attention heads block i (-1: the middle) has at `channels` wide."""
        if self.cross_attention_dim is None:  # UNet2DModel: attention_head_dim is each head's width
            width = self.attention_head_dim if self.attention_head_dim is not None else channels
            return channels // width
        heads = self.num_attention_heads or self.attention_head_dim  # diffusers' naming: these are head counts
        return heads[i] if isinstance(heads, tuple) else heads


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added between; a 1x1 conv on the skip when widths differ."""

    def __init__(self, c_in: int, c_out: int, d_time: int, groups: int, eps: float, dropout: float,
                 scale: float = 1.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_emb_proj = nn.Linear(d_time, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None
        self.scale = scale

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]  # (B, C, 1, 1): one shift per channel
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (skip + h) / self.scale


class SelfAttention(nn.Module):
    """DDPM's attention block: GroupNorm, multi-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, heads: int, groups: int, eps: float, scale: float = 1.0):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps)
        self.attn = MultiHeadAttention(channels, heads)
        self.scale = scale

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.group_norm(x).view(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        y = self.attn(y).transpose(1, 2).reshape(b, c, h, w)
        return (x + y) / self.scale


class SpatialTransformer(nn.Module):
    """Latent diffusion's attention: GroupNorm, a projection in, Transformer blocks (self-attention, cross-
    attention to the text, GEGLU MLP, each pre-LayerNorm and residual) over the H*W positions, a projection out."""

    def __init__(self, channels: int, heads: int, d_context: int, groups: int, layers: int, linear: bool):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, 1e-6)
        self.linear = linear
        self.proj_in = nn.Linear(channels, channels) if linear else nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            Block(channels, MultiHeadAttention(channels, heads, bias=False, proj_bias=True),
                  SwiGLU(channels, 4 * channels, act="gelu", bias=True),  # GEGLU (Shazeer 2020)
                  cross_attn=MultiHeadAttention(channels, heads, bias=False, cross=True, d_memory=d_context,
                                                proj_bias=True))
            for _ in range(layers))
        self.proj_out = nn.Linear(channels, channels) if linear else nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            raise SettingError("this UNet attends to text: pass encoder_hidden_states (B, S, cross_attention_dim)")
        b, c, h, w = x.shape
        y = self.norm(x)
        if not self.linear:
            y = self.proj_in(y)
        y = y.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, HW, C)
        if self.linear:
            y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, memory=context, memory_mask=context_mask)
        if self.linear:
            y = self.proj_out(y)
        y = y.reshape(b, h, w, c).permute(0, 3, 1, 2)  # (B, C, H, W)
        if not self.linear:
            y = self.proj_out(y)
        return x + y


class Downsample(nn.Module):
    def __init__(self, channels: int, padding: int):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:  # diffusers pads right and bottom only, then convolves unpadded
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNetBlock(nn.Module):
    """One resolution: resnets (each followed by attention in Attn/CrossAttn blocks), then a down- or upsampler.
    An up block's resnets first concatenate the skip connection the down path saved at this resolution."""

    def __init__(self, cfg: UNetConfig, kind: str, i: int, c_ins: list[int], c_out: int, d_time: int,
                 resample: str | None, scale: float = 1.0, mid: bool = False):
        super().__init__()
        g, eps = cfg.norm_num_groups, cfg.norm_eps
        self.resnets = nn.ModuleList(ResnetBlock(c, c_out, d_time, g, eps, cfg.dropout, scale) for c in c_ins)
        n_attn = len(c_ins) - 1 if mid else len(c_ins)  # the middle block: resnet, (attention, resnet)...
        if "CrossAttn" in kind:
            self.attentions = nn.ModuleList(
                SpatialTransformer(c_out, cfg.heads(i, c_out), cfg.cross_attention_dim, g,
                                   cfg.transformer_layers_per_block, cfg.use_linear_projection)
                for _ in range(n_attn))
        elif "Attn" in kind or (mid and cfg.add_attention):
            self.attentions = nn.ModuleList(SelfAttention(c_out, cfg.heads(i, c_out), g, eps, scale)
                                            for _ in range(n_attn))
        else:
            self.attentions = None
        self.mid = mid
        self.downsamplers = nn.ModuleList([Downsample(c_out, cfg.downsample_padding)]) if resample == "down" else None
        self.upsamplers = nn.ModuleList([Upsample(c_out)]) if resample == "up" else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None,
                context_mask: torch.Tensor | None, skips: list[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> (output, the states saved for the up path: one per resnet and one after the downsampler)."""
        saved = []
        if self.mid:
            x = self.resnets[0](x, temb)
            for attn, resnet in zip(self.attentions or [None] * (len(self.resnets) - 1), self.resnets[1:], strict=True):
                x = resnet(x if attn is None else attn(x, temb, context, context_mask), temb)
            return x, saved
        for j, resnet in enumerate(self.resnets):
            if skips is not None:
                x = torch.cat([x, skips.pop()], 1)  # (B, C + C_skip, H, W)
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[j](x, temb, context, context_mask)
            saved.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            saved.append(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x, saved


class TimestepEmbedding(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d_out)
        self.linear_2 = nn.Linear(d_out, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class UNet(nn.Module):
    """`unet(sample, timestep, encoder_hidden_states=None, class_labels=None)` -> the prediction, shaped like
    `sample` with `out_channels`. `timestep` is a number or one per sample."""

    config_class = UNetConfig

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        chans, n = cfg.block_out_channels, len(cfg.block_out_channels)
        d_time = 4 * chans[0]
        self.conv_in = nn.Conv2d(cfg.in_channels, chans[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(chans[0], d_time)
        self.class_embedding = nn.Embedding(cfg.num_class_embeds, d_time) if cfg.num_class_embeds else None
        L = cfg.layers_per_block
        self.down_blocks = nn.ModuleList()
        c_prev = chans[0]
        for i, kind in enumerate(cfg.down_block_types):
            c_ins = [c_prev] + [chans[i]] * (L - 1)
            self.down_blocks.append(UNetBlock(cfg, kind, i, c_ins, chans[i], d_time, "down" if i < n - 1 else None))
            c_prev = chans[i]
        self.mid_block = UNetBlock(cfg, cfg.mid_block_type, -1, [chans[-1]] * 2, chans[-1], d_time, None,
                                   cfg.mid_block_scale_factor, mid=True)
        # the up path reads the skips in reverse: each up resnet's input is its predecessor's output plus a skip
        rev = list(reversed(chans))
        self.up_blocks = nn.ModuleList()
        for i, kind in enumerate(cfg.up_block_types):
            c_out, c_skip_last = rev[i], rev[min(i + 1, n - 1)]
            c_ins = [(rev[i - 1] if i else rev[0]) if j == 0 else c_out for j in range(L + 1)]
            skips = [c_out] * L + [c_skip_last]
            # up block i has the heads of down block n - 1 - i, at the same resolution
            self.up_blocks.append(UNetBlock(cfg, kind, n - 1 - i, [a + b for a, b in zip(c_ins, skips, strict=True)],
                                            c_out, d_time, "up" if i < n - 1 else None))
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, chans[0], cfg.norm_eps)
        self.conv_out = nn.Conv2d(chans[0], cfg.out_channels, 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                encoder_hidden_states: torch.Tensor | None = None, class_labels: torch.Tensor | None = None,
                encoder_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if sample.dim() != 4 or sample.size(1) != cfg.in_channels:
            raise SettingError(f"sample must be (B, {cfg.in_channels}, H, W), got {tuple(sample.shape)}")
        factor = 2 ** (len(cfg.block_out_channels) - 1)
        if sample.size(2) % factor or sample.size(3) % factor:
            raise SettingError(f"sample height and width must be multiples of {factor} (one halving per down "
                               f"block), got {tuple(sample.shape[2:])}")
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(1).expand(sample.size(0)) if t.dim() == 0 else t
        emb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        emb = self.time_embedding(emb.to(sample.dtype))  # (B, 4 * C0)
        if self.class_embedding is not None:
            if class_labels is None:
                raise SettingError("this UNet is class-conditional: pass class_labels (B,)")
            emb = emb + self.class_embedding(class_labels).to(emb.dtype)
        elif class_labels is not None:
            raise SettingError("class_labels given, but this UNet has no class embedding (num_class_embeds)")
        mask = encoder_attention_mask.bool()[:, None, None, :] if encoder_attention_mask is not None else None
        if cfg.center_input_sample:
            sample = 2 * sample - 1.0
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, saved = block(x, emb, encoder_hidden_states, mask)
            skips += saved
        x, _ = self.mid_block(x, emb, encoder_hidden_states, mask)
        for block in self.up_blocks:
            x, _ = block(x, emb, encoder_hidden_states, mask, skips)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


PRESETS = {
    "tiny": UNetConfig(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                       attention_head_dim=8, num_class_embeds=11),
    "fashion": UNetConfig(sample_size=32, block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
                          down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                          up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                          attention_head_dim=32, num_class_embeds=11),
    "text-tiny": UNetConfig(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                            mid_block_type="UNetMidBlock2DCrossAttn",
                            layers_per_block=1, norm_num_groups=8, attention_head_dim=2, cross_attention_dim=24),
}
