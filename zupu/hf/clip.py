"""CLIP checkpoints in Hugging Face's layout (`CLIPModel`), both ways.

zupu                                   HF
text_model.token_embedding             text_model.embeddings.token_embedding
text_model.position_embedding          text_model.embeddings.position_embedding
text_model.final_layer_norm            text_model.final_layer_norm
vision_model.patch.proj                vision_model.embeddings.patch_embedding               (no bias)
vision_model.cls_token (1, 1, D)       vision_model.embeddings.class_embedding (D,)
vision_model.pos_embed (1, 1 + N, D)   vision_model.embeddings.position_embedding.weight (1 + N, D)
vision_model.pre_norm / layernorm      vision_model.pre_layrnorm (sic) / post_layernorm
{tower}.layers.{i}.attn.qkv            {tower}.encoder.layers.{i}.self_attn.{q,k,v}_proj     (stacked on dim 0)
{tower}.layers.{i}.attn.proj           {tower}.encoder.layers.{i}.self_attn.out_proj
{tower}.layers.{i}.ln1 / ln2           {tower}.encoder.layers.{i}.layer_norm1 / layer_norm2
{tower}.layers.{i}.mlp.fc / mlp.proj   {tower}.encoder.layers.{i}.mlp.fc1 / mlp.fc2
visual_projection, text_projection, logit_scale: the same names.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zupu.atomic import write_json
from zupu.checkpoint import CONFIG, WEIGHTS, save_state
from zupu.errors import CheckpointError
from zupu.hf import keymap
from zupu.hf.tensors import model_dtype
from zupu.models.clip import CLIP, CLIPConfig

ARCHITECTURES: dict[str, type[nn.Module]] = {"CLIPModel": CLIP}

_RENAME = {
    "text_model.token_embedding": "text_model.embeddings.token_embedding",
    "text_model.position_embedding": "text_model.embeddings.position_embedding",
    "vision_model.patch.proj": "vision_model.embeddings.patch_embedding",
    "vision_model.pre_norm": "vision_model.pre_layrnorm",
    "vision_model.layernorm": "vision_model.post_layernorm",
}
_LAYER = {"attn.proj": "self_attn.out_proj", "ln1": "layer_norm1", "ln2": "layer_norm2",
          "mlp.fc": "mlp.fc1", "mlp.proj": "mlp.fc2"}
# zupu's ViT keeps these two with leading batch axes; HF without: (zupu key, HF key, HF's number of dims)
_RESHAPED = (("vision_model.cls_token", "vision_model.embeddings.class_embedding", 1),
             ("vision_model.pos_embed", "vision_model.embeddings.position_embedding.weight", 2))


def names(key: str) -> list[str]:
    """zupu state-dict key -> HF key(s)."""
    if m := re.fullmatch(r"(text_model|vision_model)\.layers\.(\d+)\.attn\.qkv\.(weight|bias)", key):
        tower, i, p = m.groups()
        return [f"{tower}.encoder.layers.{i}.self_attn.{n}_proj.{p}" for n in ("q", "k", "v")]
    if m := re.fullmatch(r"(text_model|vision_model)\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
        tower, i, z, p = m.groups()
        return [f"{tower}.encoder.layers.{i}.{_LAYER[z]}.{p}"]
    for zupu_key, hf_key, _ in _RESHAPED:
        if key == zupu_key:
            return [hf_key]
    stem, dot, param = key.rpartition(".") if key.endswith((".weight", ".bias")) else (key, "", "")
    return [_RENAME.get(stem, stem) + dot + param]


def config_from_hf(cfg: dict[str, Any], where: str) -> CLIPConfig:
    """An HF CLIPModel config.json -> CLIPConfig; image and patch sizes must be single numbers (square)."""
    cfg = dict(cfg)
    for part in ("text_config", "vision_config"):
        if isinstance(cfg.get(f"{part}_dict"), dict):  # older configs: transformers builds the part from it alone
            cfg[part] = cfg[f"{part}_dict"]
    vision = cfg.get("vision_config") or {}
    for name in ("image_size", "patch_size"):
        if name in vision and not isinstance(vision[name], int):
            raise CheckpointError(f"{where}: vision_config.{name}={vision[name]!r}; zupu's CLIP takes square "
                                  "images and patches, one integer each")
    eos = (cfg.get("text_config") or {}).get("eos_token_id")
    if eos is not None and not isinstance(eos, int):
        raise CheckpointError(f"{where}: text_config.eos_token_id={eos!r}; zupu's CLIP pools at one token id")
    return keymap.config_from_hf(CLIPConfig, cfg, where)


def from_pretrained(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32) -> CLIP:
    """Load an HF CLIPModel checkpoint directory, its floating-point weights as `dtype` (`None` keeps the
    checkpoint's); never touches the network."""
    path = Path(path)
    cfg, arch, state = keymap.open_checkpoint(path, ARCHITECTURES, "clip", "CLIP")
    model = ARCHITECTURES[arch](config_from_hf(cfg, str(path / CONFIG)))
    model.to(model_dtype(state, dtype, str(path)))
    for zupu_key, hf_key, dims in _RESHAPED:
        if hf_key in state and state[hf_key].dim() == dims:  # another shape is left for from_hf to report
            state[hf_key] = state[hf_key].reshape(model.state_dict()[zupu_key].shape[:-dims] + state[hf_key].shape)
    keymap.from_hf(model, state, names, str(path / WEIGHTS))
    return model.eval()


def save_pretrained(model: CLIP, out: str | os.PathLike, zupu_meta: dict[str, Any]) -> None:
    """Write a folder `transformers` loads directly (`CLIPModel.from_pretrained`)."""
    if type(model) is not CLIP:
        raise CheckpointError(f"{type(model).__name__} has no Hugging Face CLIP architecture")
    state = keymap.to_hf(model.state_dict(), names)
    for _, hf_key, dims in _RESHAPED:
        state[hf_key] = state[hf_key].reshape(state[hf_key].shape[-dims:])
    cfg = dataclasses.asdict(model.config)
    out = Path(out)
    save_state(state, out / WEIGHTS)
    write_json(out / CONFIG, {**cfg, "model_type": "clip", "architectures": ["CLIPModel"],
                              "text_config": {**cfg["text_config"], "model_type": "clip_text_model"},
                              "vision_config": {**cfg["vision_config"], "model_type": "clip_vision_model"},
                              "zupu": zupu_meta})

