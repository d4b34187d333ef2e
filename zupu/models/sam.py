"""SAM (2023): encode an image once, then any prompt (clicks, a box, a rough mask) gives masks at once.

A. Kirillov, E. Mintun, N. Ravi, H. Mao, C. Rolland, L. Gustafson, T. Xiao, S. Whitehead, A. C. Berg,
W.-Y. Lo, P. Dollar, R. Girshick, "Segment Anything", ICCV 2023. https://arxiv.org/abs/2304.02643

Three parts (section 3, fig. 4):
- image encoder: a ViT over P x P patches, then a neck (1x1 and 3x3 convolutions, LayerNorm2d) to an
  embedding of E channels on the (H/P, W/P) grid. It runs once per image; everything below is cheap.
- prompt encoder: a point p in pixels becomes random Fourier features of its normalised position,
      pe(p) = [sin(2 pi (2p - 1) G), cos(2 pi (2p - 1) G)],     G ~ N(0, 1)^(2 x E/2), fixed
  plus a learned embedding for its kind (negative click, positive click, box top-left, box bottom-right);
  a "not a point" embedding pads clicks given without a box. A mask prompt (4x the grid) is downscaled by
  two stride-2 convolutions; with none, a learned "no mask" vector is added everywhere instead.
- mask decoder: output tokens [IoU; 3 + 1 mask tokens] and the prompt tokens go through a two-way
  Transformer: tokens self-attend, tokens attend to the image, an MLP on tokens, then the image attends
  to the tokens (positional encodings re-added at every attention). The image embedding is upscaled 4x
  by transposed convolutions; each mask token's MLP ("hypernetwork") gives a vector w_i and
      mask_i = w_i . upscaled(x, y)                        (one dot product per pixel)
  The IoU token's MLP predicts each mask's IoU with the object. Token 0's mask is the single answer
  when a prompt is unambiguous; tokens 1-3 are three guesses (whole, part, subpart) for one click, and
  training takes only the loss of the best of the three.
Module and parameter names in the prompt encoder and mask decoder follow the segment-anything package,
so its state dicts load through a short key map (zupu/hf/sam.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from zupu.nn import Block, FeedForward, MultiHeadAttention, PatchEmbed


@dataclass
class SamConfig:
    image_size: int = 64
    num_channels: int = 1
    patch_size: int = 4  # the embedding grid is image_size / patch_size; masks come out 4x that
    hidden_size: int = 64  # the image encoder's ViT
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 128
    prompt_embed_dim: int = 32  # E: the neck's output, the prompts and the decoder (SAM: 256)
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 4
    decoder_mlp_dim: int = 128
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 64
    layer_norm_eps: float = 1e-6
    pixel_mean: float = 0.0  # the training images' statistics: encode() standardises raw pixels with them
    pixel_std: float = 1.0

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (B, C, H, W) at each pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, H, W, C) normalised, back


class ImageEncoder(nn.Module):
    """Pre-LN ViT blocks over patches with learned positions, then the neck: (B, C, H, W) -> (B, E, H/P, W/P)."""

    def __init__(self, c: SamConfig):
        super().__init__()
        self.patch = PatchEmbed(c.image_size, c.patch_size, c.num_channels, c.hidden_size)
        self.pos_embed = nn.Parameter(torch.randn(1, self.patch.n_patches, c.hidden_size) * 0.02)
        self.layers = nn.ModuleList(
            Block(c.hidden_size, attn=MultiHeadAttention(c.hidden_size, c.num_attention_heads),
                  mlp=FeedForward(c.hidden_size, c.intermediate_size, "gelu"),
                  norm=partial(nn.LayerNorm, eps=c.layer_norm_eps))
            for _ in range(c.num_hidden_layers))
        self.neck = nn.Sequential(
            nn.Conv2d(c.hidden_size, c.prompt_embed_dim, 1, bias=False),
            LayerNorm2d(c.prompt_embed_dim, c.layer_norm_eps),
            nn.Conv2d(c.prompt_embed_dim, c.prompt_embed_dim, 3, padding=1, bias=False),
            LayerNorm2d(c.prompt_embed_dim, c.layer_norm_eps))
        self.grid = c.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x) + self.pos_embed  # (B, N, D)
        for layer in self.layers:
            x = layer(x)
        x = x.transpose(1, 2).unflatten(2, (self.grid, self.grid))  # (B, D, H/P, W/P)
        return self.neck(x)  # (B, E, H/P, W/P)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of positions in [0, 1]^2 (Tancik et al. 2020): a fixed Gaussian matrix G."""

    def __init__(self, num_pos_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) in [0, 1] -> (..., 2 * num_pos_feats)."""
        coords = 2 * math.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([coords.sin(), coords.cos()], -1)

    def dense(self, h: int, w: int) -> torch.Tensor:
        """Every grid cell's centre encoded: (E, h, w)."""
        ys = (torch.arange(h, device=self.positional_encoding_gaussian_matrix.device) + 0.5) / h
        xs = (torch.arange(w, device=ys.device) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (h, w, 2) as (x, y)
        return self.encode(grid).permute(2, 0, 1)  # (E, h, w)


class PromptEncoder(nn.Module):
    """Clicks and boxes -> sparse tokens (B, N, E); a mask prompt (or its absence) -> dense (B, E, h, w)."""

    def __init__(self, c: SamConfig):
        super().__init__()
        e = c.prompt_embed_dim
        self.image_size, self.grid = c.image_size, c.grid
        self.pe_layer = PositionEmbeddingRandom(e // 2)
        # 0 negative click, 1 positive click, 2 box top-left, 3 box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, e) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, e)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, c.mask_in_chans // 4, 2, stride=2), LayerNorm2d(c.mask_in_chans // 4, c.layer_norm_eps),
            nn.GELU(), nn.Conv2d(c.mask_in_chans // 4, c.mask_in_chans, 2, stride=2),
            LayerNorm2d(c.mask_in_chans, c.layer_norm_eps), nn.GELU(), nn.Conv2d(c.mask_in_chans, e, 1))
        self.no_mask_embed = nn.Embedding(1, e)

    def dense_pe(self) -> torch.Tensor:
        return self.pe_layer.dense(self.grid, self.grid)[None]  # (1, E, h, w)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords (B, N, 2) as (x, y) pixels, labels (B, N) in {-1 pad, 0 negative, 1 positive} -> (B, N, E)."""
        pe = self.pe_layer.encode((coords + 0.5) / self.image_size)  # pixel centres, normalised
        kind = [(labels == k)[..., None] for k in (-1, 0, 1)]
        pe = torch.where(kind[0], 0.0, pe)  # a pad carries no position
        return (pe + kind[0] * self.not_a_point_embed.weight + kind[1] * self.point_embeddings[0].weight
                + kind[2] * self.point_embeddings[1].weight)

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) as x0, y0, x1, y1 -> two corner tokens (B, 2, E)."""
        corners = self.pe_layer.encode((boxes.reshape(-1, 2, 2) + 0.5) / self.image_size)
        return corners + torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None = None, boxes: torch.Tensor | None = None,
                masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        given = [t for t in (points[0] if points is not None else None, boxes, masks) if t is not None]
        b = given[0].size(0) if given else 1
        tokens = []
        if points is not None:
            coords, labels = points
            if boxes is None:  # clicks alone are padded with one not-a-point token
                coords = torch.cat([coords, coords.new_zeros(b, 1, 2)], 1)
                labels = torch.cat([labels, labels.new_full((b, 1), -1)], 1)
            tokens.append(self.embed_points(coords, labels))
        if boxes is not None:
            tokens.append(self.embed_boxes(boxes))
        weight = self.no_mask_embed.weight
        sparse = torch.cat(tokens, 1) if tokens else weight.new_empty(b, 0, weight.size(1))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = weight.reshape(1, -1, 1, 1).expand(b, -1, self.grid, self.grid)
        return sparse, dense  # (B, N, E), (B, E, h, w)


class Attention(nn.Module):
    """Multi-head attention with q, k, v from three inputs, projected down to E / downsample_rate wide
    (the decoder's token<->image attentions use half the width to save compute)."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        internal = embedding_dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(embedding_dim, internal) for _ in range(3))
        self.out_proj = nn.Linear(internal, embedding_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, t, _ = q.shape
        q, k, v = (p(x).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, nh, T, hs)
                   for p, x in ((self.q_proj, q), (self.k_proj, k), (self.v_proj, v)))
        y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, T, hs)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1))  # (B, T, internal) -> (B, T, E)


class TwoWayAttentionBlock(nn.Module):
    """Tokens self-attend, tokens -> image, MLP on tokens, image -> tokens; post-norm after each."""

    def __init__(self, e: int, heads: int, mlp_dim: int, downsample: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = Attention(e, heads)
        self.cross_attn_token_to_image = Attention(e, heads, downsample)
        self.mlp = FeedForward(e, mlp_dim, "relu")
        self.cross_attn_image_to_token = Attention(e, heads, downsample)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(e) for _ in range(4))
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:  # the first layer's queries are the prompt embeddings themselves
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, c: SamConfig):
        super().__init__()
        e, r = c.prompt_embed_dim, c.attention_downsample_rate
        self.layers = nn.ModuleList(TwoWayAttentionBlock(e, c.decoder_heads, c.decoder_mlp_dim, r, i == 0)
                                    for i in range(c.decoder_depth))
        self.final_attn_token_to_image = Attention(e, c.decoder_heads, r)
        self.norm_final_attn = nn.LayerNorm(e)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe (B, E, h, w); tokens (B, T, E) -> tokens (B, T, E), image (B, h w, E)."""
        keys, key_pe = image.flatten(2).transpose(1, 2), image_pe.flatten(2).transpose(1, 2)  # (B, h w, E)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attn = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


class MLP(nn.Module):
    """Linear layers with ReLU between them (the hypernetworks and the IoU head)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, num_layers: int):
        super().__init__()
        dims = [d_in] + [d_hidden] * (num_layers - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    def __init__(self, c: SamConfig):
        super().__init__()
        e = c.prompt_embed_dim
        self.transformer = TwoWayTransformer(c)
        self.num_mask_tokens = c.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, e)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, e)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(e, e // 4, 2, stride=2), LayerNorm2d(e // 4, c.layer_norm_eps), nn.GELU(),
            nn.ConvTranspose2d(e // 4, e // 8, 2, stride=2), nn.GELU())
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(e, e, e // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(e, c.iou_head_hidden_dim, self.num_mask_tokens, c.iou_head_depth)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor,
                multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """image (1 or B, E, h, w), image_pe (1, E, h, w), sparse (B, N, E), dense (B, E, h, w) ->
        mask logits (B, M, 4h, 4w) and predicted IoUs (B, M): M = 3 guesses, or token 0's single mask."""
        b = sparse.size(0)
        out = torch.cat([self.iou_token.weight, self.mask_tokens.weight])[None].expand(b, -1, -1)  # (B, 1 + 4, E)
        tokens = torch.cat([out, sparse], 1)  # (B, 5 + N, E)
        src = image.expand(b, -1, -1, -1) + dense  # one image's embedding serves all its prompts
        _, e, h, w = src.shape
        hs, src = self.transformer(src, image_pe.expand(b, -1, -1, -1), tokens)
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, e, h, w))  # (B, E/8, 4h, 4w)
        hyper = torch.stack([mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        masks = (hyper @ up.flatten(2)).unflatten(2, up.shape[-2:])  # (B, 4, E/8) @ (B, E/8, 16hw) -> (B, 4, 4h, 4w)
        iou = self.iou_prediction_head(hs[:, 0])  # (B, 4)
        pick = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, pick], iou[:, pick]


class SAM(nn.Module):
    """`forward(pixel_values, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True)`:
    images (B, C, S, S), clicks (B, N, 2) in pixels as (x, y) with labels (B, N) (1 positive, 0 negative),
    boxes (B, 4) -> mask logits (B, M, S, S) and predicted IoUs (B, M). `encode` + `decode` split it so an
    image is encoded once for many prompts."""

    config_class = SamConfig

    def __init__(self, config: SamConfig):
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config)
        self.prompt_encoder = PromptEncoder(config)
        self.mask_decoder = MaskDecoder(config)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Raw pixels (B, C, S, S), e.g. 0-255, -> the image embedding (B, E, h, w)."""
        c = self.config
        return self.image_encoder((pixel_values - c.pixel_mean) / c.pixel_std)

    def decode(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               mask_input: torch.Tensor | None = None,
               multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.prompt_encoder(points, boxes, mask_input)
        return self.mask_decoder(image_embeddings, self.prompt_encoder.dense_pe(), sparse, dense, multimask_output)

    def forward(self, pixel_values: torch.Tensor, point_coords: torch.Tensor | None = None,
                point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
                mask_input: torch.Tensor | None = None,
                multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.encode(pixel_values), point_coords, point_labels, boxes, mask_input, multimask_output)


PRESETS = {
    "membrane": SamConfig(),
    "tiny": SamConfig(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, prompt_embed_dim=16, mask_in_chans=8, decoder_depth=1, decoder_heads=2,
                      decoder_mlp_dim=32, iou_head_hidden_dim=16),
}
