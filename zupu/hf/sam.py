"""Checkpoints of the two reference SAMs in zupu's SAM: their prompt encoder and mask decoder (zupu's image
encoder is its own small ViT, so image-encoder weights are not taken).

- segment-anything's `Sam` state dict: the same module names except the two-way blocks' MLP, which is
  zupu's FeedForward (`lin1`, `lin2` -> `fc`, `proj`).
- transformers' `SamModel` state dict: a key map (`TRANSFORMERS_RENAMES`). Its two-way blocks' LayerNorms take
  `mask_decoder_config.layer_norm_eps` (1e-6 by default) where segment-anything and zupu use torch's 1e-5, so
  outputs agree to float precision only for a config with `layer_norm_eps=1e-5` (facebook's checkpoints were
  trained with 1e-5; transformers' port runs them with 1e-6).
"""

from __future__ import annotations

import re

import torch

from zupu.checkpoint import check_keys
from zupu.models.sam import SAM

PARTS = ("prompt_encoder.", "mask_decoder.")
_RENAMES = ((".mlp.lin1.", ".mlp.fc."), (".mlp.lin2.", ".mlp.proj."))
# transformers' name -> zupu's, applied in order (re.sub); the MLP heads are numbered in `transformers_key`
TRANSFORMERS_RENAMES = (
    (r"^shared_image_embedding\.positional_embedding$", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings."),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"\.layer_norm([1-4])\.", r".norm\1."),
    (r"\.mlp\.lin1\.", ".mlp.fc."),
    (r"\.mlp\.lin2\.", ".mlp.proj."),
    (r"\.layer_norm_final_attn\.", ".norm_final_attn."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
)
# SamFeedForward (proj_in, layers.0.., proj_out) is zupu's MLP (layers.0..n-1)
_HEAD = re.compile(r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\."
                   r"(proj_in|layers\.(\d+)|proj_out)\.(weight|bias)$")
# tied to shared_image_embedding.positional_embedding in SamModel: one tensor under two names
_TIED = "prompt_encoder.shared_embedding.positional_embedding"


def zupu_key(key: str) -> str:
    for theirs, ours in _RENAMES:
        key = key.replace(theirs, ours)
    return key


def transformers_key(key: str, model: SAM) -> str:
    """A transformers `SamModel` key -> zupu's name for the same tensor."""
    head = _HEAD.match(key)
    if head:
        n = len(model.get_submodule(f"mask_decoder.{head[1]}").layers)
        index = {"proj_in": 0, "proj_out": n - 1}.get(head[2], int(head[3] or 0) + 1)
        return f"mask_decoder.{head[1]}.layers.{index}.{head[4]}"
    for pattern, repl in TRANSFORMERS_RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def _load(model: SAM, theirs: dict[str, torch.Tensor], where: str) -> None:
    own = {k: v for k, v in model.state_dict().items() if k.startswith(PARTS)}
    shapes = [f"{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own.keys() & theirs.keys() if own[k].shape != theirs[k].shape]
    check_keys(model, where, sorted(own.keys() - theirs.keys()), sorted(theirs.keys() - own.keys()), shapes)
    model.load_state_dict(theirs, strict=False)


def load_segment_anything(model: SAM, state: dict[str, torch.Tensor],
                          where: str = "segment-anything state dict") -> None:
    """Load a segment-anything `Sam` state dict's prompt encoder and mask decoder into `model` (its
    `image_encoder.*` and anything else is left out); every missing or misshapen tensor is named."""
    _load(model, {zupu_key(k): v for k, v in state.items() if k.startswith(PARTS)}, where)


def load_transformers(model: SAM, state: dict[str, torch.Tensor],
                      where: str = "transformers SamModel state dict") -> None:
    """Load a transformers `SamModel` state dict's prompt encoder, mask decoder and the positional encoding they
    share into `model` (`vision_encoder.*` is left out); every missing or misshapen tensor is named."""
    theirs = {transformers_key(k, model): v for k, v in state.items()
              if k != _TIED and (k.startswith(PARTS) or k.startswith("shared_image_embedding."))}
    _load(model, theirs, where)
