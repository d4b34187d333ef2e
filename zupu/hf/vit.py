"""ViT checkpoints in Hugging Face's layout (`ViTModel`, `ViTForImageClassification`), both ways.

zupu                                 HF
patch.proj                           embeddings.patch_embeddings.projection
cls_token / pos_embed                embeddings.cls_token / embeddings.position_embeddings
layers.{i}.attn.qkv                  encoder.layer.{i}.attention.attention.{query,key,value}   (stacked on dim 0)
layers.{i}.attn.proj                 encoder.layer.{i}.attention.output.dense
layers.{i}.ln1 / ln2                 encoder.layer.{i}.layernorm_before / layernorm_after
layers.{i}.mlp.fc / mlp.proj         encoder.layer.{i}.intermediate.dense / output.dense
layernorm / pooler                   layernorm / pooler.dense
The classifier's encoder sits under `vit.` in both.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zupu.checkpoint import CONFIG, WEIGHTS
from zupu.errors import CheckpointError
from zupu.hf import keymap
from zupu.hf.tensors import model_dtype
from zupu.models.vit import ViT, ViTConfig, ViTForImageClassification

ARCHITECTURES: dict[str, type[nn.Module]] = {"ViTModel": ViT, "ViTForImageClassification": ViTForImageClassification}

_RENAME = {
    "patch.proj": "embeddings.patch_embeddings.projection",
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "pooler": "pooler.dense",
}
_LAYER = {"attn.proj": "attention.output.dense", "ln1": "layernorm_before", "ln2": "layernorm_after",
          "mlp.fc": "intermediate.dense", "mlp.proj": "output.dense"}


def _encoder_names(key: str) -> list[str]:
    if m := re.fullmatch(r"layers\.(\d+)\.attn\.qkv\.(weight|bias)", key):
        i, p = m.groups()
        return [f"encoder.layer.{i}.attention.attention.{n}.{p}" for n in ("query", "key", "value")]
    if m := re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", key):
        i, z, p = m.groups()
        return [f"encoder.layer.{i}.{_LAYER[z]}.{p}"]
    stem, dot, param = key.rpartition(".") if key.endswith((".weight", ".bias")) else (key, "", "")
    return [_RENAME.get(stem, stem) + dot + param]


def names(key: str) -> list[str]:
    """zupu state-dict key -> HF key(s)."""
    if key.startswith("vit."):
        return ["vit." + n for n in _encoder_names(key.removeprefix("vit."))]
    return _encoder_names(key)  # classifier.* is named alike


def config_from_hf(cfg: dict[str, Any], where: str) -> ViTConfig:
    if cfg.get("qkv_bias", True) is not True:
        raise CheckpointError(f"{where}: qkv_bias=false is not supported; zupu's ViT has biased q/k/v projections")
    return keymap.config_from_hf(ViTConfig, cfg, where)


def from_pretrained(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32) -> nn.Module:
    """Load an HF ViT checkpoint directory (config.json + weights), its floating-point weights as `dtype`
    (`None` keeps the checkpoint's); never touches the network."""
    path = Path(path)
    cfg, arch, state = keymap.open_checkpoint(path, ARCHITECTURES, "vit", "ViT")
    model = ARCHITECTURES[arch](config_from_hf(cfg, str(path / CONFIG)))
    model.to(model_dtype(state, dtype, str(path)))
    keymap.from_hf(model, state, names, str(path / WEIGHTS))
    return model.eval()


def save_pretrained(model: nn.Module, out: str | os.PathLike, zupu_meta: dict[str, Any]) -> None:
    """Write a folder `transformers` loads directly (`ViTModel`/`ViTForImageClassification`.from_pretrained)."""
    keymap.save_hf(model, out, names, ARCHITECTURES, "ViT", "vit", zupu_meta, qkv_bias=True)
