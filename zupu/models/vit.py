"""ViT (2020): an image is a sequence of 16x16 words, read by a plain Transformer encoder.

A. Dosovitskiy, L. Beyer, A. Kolesnikov, D. Weissenborn, X. Zhai, T. Unterthiner, M. Dehghani, M. Minderer,
G. Heigold, S. Gelly, J. Uszkoreit, N. Houlsby, "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale", ICLR 2021. https://arxiv.org/abs/2010.11929

Section 3.1, eqs. 1-4, with x_p^i the i-th flattened P x P patch and E a linear projection (a convolution
with kernel = stride = P):

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos          E_pos learned, (N + 1) x D
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                       pre-LN residual blocks
    z_l = MLP(LN(z'_l)) + z'_l
    y = LN(z_L^0)                                           the [class] token's final state -> head

The only image-specific prior is the patch cut; everything else (which patches relate, where things
are) is learned, which is why ViT needs more data than a CNN to match it (section 4.2, fig. 3).
Config field names follow Hugging Face's `ViTConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from zupu.nn import Block, FeedForward, MultiHeadAttention, PatchEmbed


@dataclass
class ViTConfig:
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    num_labels: int = 1000  # classes of ViTForImageClassification


class ViT(nn.Module):
    """The encoder: `forward(pixel_values)` (B, C, H, W) returns LN(z_L), (B, 1 + N, D); row 0 is [class].

    CLIP's image encoder is this ViT with an unbiased patch projection (`patch_bias=False`) and one more
    LayerNorm on z_0 before the blocks (`pre_norm=True`)."""

    config_class = ViTConfig

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True, patch_bias: bool = True,
                 pre_norm: bool = False):
        super().__init__()
        self.config = c = config
        self.patch = PatchEmbed(c.image_size, c.patch_size, c.num_channels, c.hidden_size, bias=patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch.n_patches, c.hidden_size))
        self.drop = nn.Dropout(c.hidden_dropout_prob)
        self.pre_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps) if pre_norm else nn.Identity()
        self.layers = nn.ModuleList(
            Block(c.hidden_size,
                  attn=MultiHeadAttention(c.hidden_size, c.num_attention_heads, dropout=c.attention_probs_dropout_prob),
                  mlp=FeedForward(c.hidden_size, c.intermediate_size, c.hidden_act),
                  norm=partial(nn.LayerNorm, eps=c.layer_norm_eps), pre_ln=True, dropout=c.hidden_dropout_prob)
            for _ in range(c.num_hidden_layers))
        self.layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        # HF's ViTModel has a tanh pooler over [class]; its image classifier reads LN(z_L^0) directly
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size) if add_pooling_layer else None
        self.apply(lambda m: init_weights(m, c.initializer_range))
        nn.init.trunc_normal_(self.cls_token, std=c.initializer_range)
        nn.init.trunc_normal_(self.pos_embed, std=c.initializer_range)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch(pixel_values)  # (B, N, D)
        cls = self.cls_token.expand(x.size(0), -1, -1)  # (B, 1, D)
        return self.pre_norm(self.drop(torch.cat([cls, x], 1) + self.pos_embed))  # (B, 1 + N, D)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.embed(pixel_values)
        for layer in self.layers:
            x = layer(x)
        return self.layernorm(x)

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pooler(h[:, 0]))  # (B, D)

    @torch.no_grad()
    def attention_maps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Every layer's attention probabilities, (L, B, heads, 1 + N, 1 + N)."""
        x, maps = self.embed(pixel_values), []
        for layer in self.layers:
            maps.append(layer.attn.weights(layer.ln1(x)))
            x = layer(x)
        return torch.stack(maps)


def init_weights(m: nn.Module, std: float) -> None:
    """Truncated-normal weights, zero biases, unit LayerNorms (as HF initialises ViT)."""
    if isinstance(m, nn.Linear | nn.Conv2d):
        nn.init.trunc_normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class ViTForImageClassification(nn.Module):
    """Encoder + linear head on the [class] token's final state; `forward` returns logits (B, num_labels)."""

    config_class = ViTConfig

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.vit = ViT(config, add_pooling_layer=False)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self.classifier, config.initializer_range)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.vit(pixel_values)[:, 0])


PRESETS = {
    "base": ViTConfig(),  # ViT-B/16: 86M parameters
    "mnist": ViTConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                       image_size=28, patch_size=4, num_channels=1, num_labels=10),
    "tiny": ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                      image_size=16, patch_size=4, num_channels=3, num_labels=5),
}
