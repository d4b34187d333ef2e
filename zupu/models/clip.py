"""CLIP (2021): an image encoder and a text encoder trained so that matching pairs point the same way.

A. Radford, J. W. Kim, C. Hallacy, A. Ramesh, G. Goh, S. Agarwal, G. Sastry, A. Askell, P. Mishkin, J. Clark,
G. Krueger, I. Sutskever, "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
https://arxiv.org/abs/2103.00020

Section 2.3 and figure 3, for a batch of N (image, text) pairs:

    I_e = normalize(W_i f_image(I))          image encoder (a ViT: pre-LN, [class] token, an extra LayerNorm
                                             before the blocks), its [class] state after a LayerNorm, projected
    T_e = normalize(W_t f_text(T))           text encoder (a causal Transformer, GPT-2-like), its final state at
                                             the [EOS] token after a LayerNorm, projected
    logits = I_e T_e^T * exp(t)              cosine similarities scaled by a learned temperature, N x N;
                                             t starts at log(1 / 0.07) and exp(t) is clipped at 100
    loss = (CE(logits, arange(N)) + CE(logits^T, arange(N))) / 2      symmetric cross-entropy: each image
                                             picks its text among the batch's N, and each text its image

The diagonal holds the N true pairs, the other N^2 - N entries serve as negatives. A class name written as a
caption ("a photo of a dog") is then a classifier: the zero-shot prediction is the text whose embedding is
nearest the image's (section 3.1.2).

Config field names follow Hugging Face's `CLIPConfig` / `CLIPTextConfig` / `CLIPVisionConfig`, nested as
there; `zupu.hf.clip` maps checkpoints both ways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from zupu.errors import SettingError
from zupu.models.vit import ViT, ViTConfig
from zupu.nn import Block, FeedForward, MultiHeadAttention, padding_mask


@dataclass
class CLIPTextConfig:
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77  # the context: 75 BPE tokens between <|startoftext|> and <|endoftext|>
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    pad_token_id: int = 1
    bos_token_id: int = 49406
    # pooling reads the state at the first eos_token_id; with the legacy value 2 (configs saved before
    # transformers PR #24773) it reads the highest id instead, which is <|endoftext|> in OpenAI's vocabulary
    eos_token_id: int = 49407


@dataclass
class CLIPVisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0


@dataclass
class CLIPConfig:
    text_config: CLIPTextConfig = field(default_factory=CLIPTextConfig)
    vision_config: CLIPVisionConfig = field(default_factory=CLIPVisionConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = math.log(1 / 0.07)  # 2.6593; transformers writes 2.6592
    initializer_factor: float = 1.0


LEGACY_EOS = 2  # see CLIPTextConfig.eos_token_id
MAX_LOGIT_SCALE = 100.0


class CLIPOutput(NamedTuple):
    logits_per_image: torch.Tensor  # (B_image, B_text)
    logits_per_text: torch.Tensor  # (B_text, B_image)
    image_embeds: torch.Tensor  # (B_image, projection_dim), unit length
    text_embeds: torch.Tensor  # (B_text, projection_dim), unit length
    loss: torch.Tensor | None = None


class CLIPTextTransformer(nn.Module):
    """Token + learned position embeddings, causal pre-LN blocks, a final LayerNorm. `forward` returns the
    last hidden state (B, T, D); `pool` picks each row's state at its end-of-text token."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = c = config
        self.token_embedding = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embedding = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.layers = nn.ModuleList(
            Block(c.hidden_size, attn=MultiHeadAttention(c.hidden_size, c.num_attention_heads,
                                                         dropout=c.attention_dropout),
                  mlp=FeedForward(c.hidden_size, c.intermediate_size, c.hidden_act),
                  norm=partial(nn.LayerNorm, eps=c.layer_norm_eps), pre_ln=True)
            for _ in range(c.num_hidden_layers))
        self.final_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t = input_ids.shape
        if t > self.config.max_position_embeddings:
            raise SettingError(f"{t} tokens are longer than the text context max_position_embeddings="
                               f"{self.config.max_position_embeddings}; tokenize with truncation or shorten the text")
        positions = torch.arange(t, device=input_ids.device)
        x = self.token_embedding(input_ids) + self.position_embedding(positions)  # (B, T, D)
        # a padding mask as well as the causal one (MultiHeadAttention combines them)
        mask = padding_mask(attention_mask) if attention_mask is not None else None
        for layer in self.layers:
            x = layer(x, mask, causal=True)
        return self.final_layer_norm(x)

    def pool(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D): the state at the first eos_token_id of each row (the highest id under the
        legacy eos_token_id 2), the one position that has read the whole caption."""
        eos = self.config.eos_token_id
        ids = input_ids.int()
        where = ids.argmax(-1) if eos == LEGACY_EOS else (ids == eos).int().argmax(-1)  # (B,)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), where]


def vision_transformer(c: CLIPVisionConfig) -> ViT:
    """CLIP's image encoder: zupu's ViT with an unbiased patch projection and a LayerNorm before the blocks;
    its final LayerNorm is CLIP's post_layernorm."""
    vit = ViTConfig(hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                    num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
                    hidden_act=c.hidden_act, attention_probs_dropout_prob=c.attention_dropout,
                    layer_norm_eps=c.layer_norm_eps, image_size=c.image_size, patch_size=c.patch_size,
                    num_channels=c.num_channels)
    return ViT(vit, add_pooling_layer=False, patch_bias=False, pre_norm=True)


class CLIP(nn.Module):
    """Both encoders, their projections into one space and the temperature.

    `get_image_features(pixel_values)` (B, C, H, W) and `get_text_features(input_ids, attention_mask=)` (B, T)
    return projected, unnormalised embeddings (B, projection_dim), as transformers' CLIPModel;
    `forward(input_ids, pixel_values)` returns a `CLIPOutput` with both logit matrices (and the loss with
    `return_loss=True`)."""

    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = c = config
        t, v = c.text_config, c.vision_config
        self.text_model = CLIPTextTransformer(t)
        self.vision_model = vision_transformer(v)
        self.visual_projection = nn.Linear(v.hidden_size, c.projection_dim, bias=False)
        self.text_projection = nn.Linear(t.hidden_size, c.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(c.logit_scale_init_value)))
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """The original CLIP's initialisation (also transformers'): residual-branch inputs scaled down by
        sqrt(2 * layers) so that the sum over 2L sublayers keeps unit scale; zero biases, unit LayerNorms."""
        c = self.config
        for tower, cfg in ((self.text_model, c.text_config), (self.vision_model, c.vision_config)):
            f, d, n = cfg.initializer_factor, cfg.hidden_size, cfg.num_hidden_layers
            for m in tower.modules():
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            for layer in tower.layers:
                nn.init.normal_(layer.attn.qkv.weight, std=d ** -0.5 * (2 * n) ** -0.5 * f)
                nn.init.normal_(layer.attn.proj.weight, std=d ** -0.5 * f)
                nn.init.normal_(layer.mlp.fc.weight, std=(2 * d) ** -0.5 * f)
                nn.init.normal_(layer.mlp.proj.weight, std=d ** -0.5 * (2 * n) ** -0.5 * f)
        t, v = c.text_config, c.vision_config
        nn.init.normal_(self.text_model.token_embedding.weight, std=0.02 * t.initializer_factor)
        nn.init.normal_(self.text_model.position_embedding.weight, std=0.02 * t.initializer_factor)
        nn.init.normal_(self.vision_model.cls_token, std=v.hidden_size ** -0.5 * v.initializer_factor)
        nn.init.normal_(self.vision_model.patch.proj.weight, std=v.initializer_range * v.initializer_factor)
        nn.init.normal_(self.vision_model.pos_embed, std=v.initializer_range * v.initializer_factor)
        nn.init.normal_(self.text_projection.weight, std=t.hidden_size ** -0.5 * c.initializer_factor)
        nn.init.normal_(self.visual_projection.weight, std=v.hidden_size ** -0.5 * c.initializer_factor)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> W_i LN([class] state), (B, projection_dim)."""
        pixel_values = pixel_values.to(self.visual_projection.weight.dtype)
        return self.visual_projection(self.vision_model(pixel_values)[:, 0])

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) token ids (each row holding its end-of-text token) -> W_t LN(EOT state), (B, projection_dim)."""
        hidden = self.text_model(input_ids, attention_mask)
        return self.text_projection(self.text_model.pool(hidden, input_ids))

    def temperature(self) -> torch.Tensor:
        """exp(t), the logits' scale. Training clips it at 100 (section 2.5) where the gradient stops pushing
        it further; evaluation uses it as stored, as transformers and OpenAI's code do."""
        scale = self.logit_scale.exp()
        return scale.clamp(max=MAX_LOGIT_SCALE) if self.training else scale

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                attention_mask: torch.Tensor | None = None, return_loss: bool = False) -> CLIPOutput:
        image = F.normalize(self.get_image_features(pixel_values), dim=-1)  # (B_i, E)
        text = F.normalize(self.get_text_features(input_ids, attention_mask), dim=-1)  # (B_t, E)
        logits_per_text = text @ image.t() * self.temperature()  # (B_t, B_i)
        loss = contrastive_loss(logits_per_text) if return_loss else None
        return CLIPOutput(logits_per_text.t(), logits_per_text, image, text, loss)


def contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """The symmetric cross-entropy of a square similarity matrix whose diagonal holds the true pairs."""
    if logits_per_text.size(0) != logits_per_text.size(1):
        raise SettingError(f"the contrastive loss needs as many texts as images (the i-th text describes the i-th "
                           f"image), got logits {tuple(logits_per_text.shape)}")
    target = torch.arange(logits_per_text.size(0), device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, target) + F.cross_entropy(logits_per_text.t(), target)) / 2


PRESETS = {
    # ViT-B/32, the model of openai/clip-vit-base-patch32: 151M parameters
    "base": CLIPConfig(),
    "tiny": CLIPConfig(CLIPTextConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=16, eos_token_id=98),
                       CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, image_size=16, patch_size=4),
                       projection_dim=16),
}
