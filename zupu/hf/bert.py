"""BERT checkpoints in Hugging Face's layout (`BertModel`, `BertForMaskedLM`, `BertForPreTraining`,
`BertForSequenceClassification`), both ways.

zupu                                 HF
layers.{i}.attn.qkv                  encoder.layer.{i}.attention.self.{query,key,value}   (stacked on dim 0)
layers.{i}.attn.proj / ln1           encoder.layer.{i}.attention.output.dense / .LayerNorm
layers.{i}.mlp.fc                    encoder.layer.{i}.intermediate.dense
layers.{i}.mlp.proj / ln2            encoder.layer.{i}.output.dense / .LayerNorm
pooler                               pooler.dense
mlm.dense / mlm.LayerNorm / mlm.bias cls.predictions.transform.dense / .transform.LayerNorm / cls.predictions.bias
nsp                                  cls.seq_relationship
A head model's encoder sits under `bert.` in both. The masked-LM decoder matrix is the token embedding
(tied), so `cls.predictions.decoder.*` is not stored separately here.
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
from zupu.models.bert import Bert, BertConfig, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "BertModel": Bert,
    "BertForMaskedLM": BertForMaskedLM,
    "BertForPreTraining": BertForPreTraining,
    "BertForSequenceClassification": BertForSequenceClassification,
}

_LAYER = (  # (zupu, HF) inside encoder layer i
    ("attn.proj", "attention.output.dense"),
    ("ln1", "attention.output.LayerNorm"),
    ("mlp.fc", "intermediate.dense"),
    ("mlp.proj", "output.dense"),
    ("ln2", "output.LayerNorm"),
)
_HEADS = (
    ("mlm.dense.", "cls.predictions.transform.dense."),
    ("mlm.LayerNorm.", "cls.predictions.transform.LayerNorm."),
    ("mlm.bias", "cls.predictions.bias"),
    ("nsp.", "cls.seq_relationship."),
)


def _encoder_names(key: str) -> list[str]:
    if m := re.fullmatch(r"layers\.(\d+)\.attn\.qkv\.(weight|bias)", key):
        i, p = m.groups()
        return [f"encoder.layer.{i}.attention.self.{n}.{p}" for n in ("query", "key", "value")]
    if m := re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", key):
        i, z, p = m.groups()
        return [f"encoder.layer.{i}.{dict(_LAYER)[z]}.{p}"]
    if key.startswith("pooler."):
        return ["pooler.dense." + key.removeprefix("pooler.")]
    return [key]  # embeddings.* are named alike


def names(key: str) -> list[str]:
    """zupu state-dict key -> HF key(s)."""
    if key.startswith("bert."):
        return ["bert." + n for n in _encoder_names(key.removeprefix("bert."))]
    for z, h in _HEADS:
        if key.startswith(z):
            return [h + key.removeprefix(z)]
    return _encoder_names(key)


def fits(model: nn.Module) -> bool:
    """Whether `model` is one of the architectures `transformers` has (others save as zupu checkpoints)."""
    return type(model) in ARCHITECTURES.values()


def config_from_hf(cfg: dict[str, Any], where: str) -> BertConfig:
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{where}: position_embedding_type {cfg['position_embedding_type']!r} is not "
                              "supported; zupu's BERT has absolute learned positions only")
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        raise CheckpointError(f"{where}: a BERT decoder (is_decoder / add_cross_attention) is not supported")
    return keymap.config_from_hf(BertConfig, cfg, where)


def from_pretrained(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32) -> nn.Module:
    """Load an HF BERT checkpoint directory (config.json + weights), its floating-point weights as `dtype`
    (`None` keeps the checkpoint's); never touches the network."""
    path = Path(path)
    cfg, arch, state = keymap.open_checkpoint(path, ARCHITECTURES, "bert", "BERT")
    model = ARCHITECTURES[arch](config_from_hf(cfg, str(path / CONFIG)))
    model.to(model_dtype(state, dtype, str(path)))
    ignore = [k for k in state if k.endswith("embeddings.position_ids")]  # a buffer old transformers saved
    word = state.get("bert.embeddings.word_embeddings.weight")
    decoder = state.get("cls.predictions.decoder.weight")
    if decoder is not None:
        if word is None or decoder.shape != word.shape or not torch.equal(decoder, word):
            raise CheckpointError(f"{path / WEIGHTS}: cls.predictions.decoder.weight differs from "
                                  "bert.embeddings.word_embeddings.weight; zupu's BERT ties them")
        ignore.append("cls.predictions.decoder.weight")
    ignore.append("cls.predictions.decoder.bias")  # the same tensor as cls.predictions.bias
    keymap.from_hf(model, state, names, str(path / WEIGHTS), ignore)
    return model.eval()


def save_pretrained(model: nn.Module, out: str | os.PathLike, zupu_meta: dict[str, Any]) -> None:
    """Write a folder `transformers` loads directly (`AutoModel`/`BertFor...`.from_pretrained)."""
    keymap.save_hf(model, out, names, ARCHITECTURES, "BERT", "bert", zupu_meta)
