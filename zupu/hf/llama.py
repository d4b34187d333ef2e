"""Llama checkpoints in Hugging Face's layout (`LlamaForCausalLM`), both ways.

zupu                                 HF
embed_tokens                         model.embed_tokens
layers.{i}.attn.qkv                  model.layers.{i}.self_attn.{q,k,v}_proj (stacked on dim 0: nh, n_kv, n_kv heads)
layers.{i}.attn.proj                 model.layers.{i}.self_attn.o_proj
layers.{i}.mlp.fc                    model.layers.{i}.mlp.{gate,up}_proj       (stacked on dim 0)
layers.{i}.mlp.proj                  model.layers.{i}.mlp.down_proj
layers.{i}.ln1 / ln2                 model.layers.{i}.input_layernorm / post_attention_layernorm
norm / lm_head                       model.norm / lm_head (absent from the file when tied)

`config.json` carries rope theta and scaling as `rope_parameters` (transformers 5) or `rope_theta` +
`rope_scaling` (earlier releases); both are read, both are written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from zupu.atomic import write_json
from zupu.checkpoint import CONFIG, WEIGHTS, save_state
from zupu.errors import CheckpointError
from zupu.hf import keymap
from zupu.hf.tensors import model_dtype
from zupu.models.llama import Llama, LlamaConfig
from zupu.nn import RotaryEmbedding

ARCHITECTURES = {"LlamaForCausalLM": Llama}

_LAYER = {"attn.proj": "self_attn.o_proj", "mlp.proj": "mlp.down_proj", "ln1": "input_layernorm",
          "ln2": "post_attention_layernorm"}


def names_for(config: LlamaConfig):
    """zupu state-dict key -> HF key(s) for a model of this config (the fused q/k/v rows depend on the heads)."""
    d, hs = config.hidden_size, config.head_dim
    d_kv = (config.num_key_value_heads or config.num_attention_heads) * hs

    def names(key: str) -> list[str] | dict[str, int]:
        if m := re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", key):
            i, z = m.groups()
            at = f"model.layers.{i}."
            if z == "attn.qkv":
                return {at + "self_attn.q_proj.weight": d, at + "self_attn.k_proj.weight": d_kv,
                        at + "self_attn.v_proj.weight": d_kv}
            if z == "mlp.fc":
                return [at + "mlp.gate_proj.weight", at + "mlp.up_proj.weight"]
            return [at + _LAYER[z] + ".weight"]
        if key == "lm_head.weight":
            return [key]
        return ["model." + key]  # embed_tokens, norm

    return names


def _rope(cfg: dict[str, Any], where: str) -> tuple[float, dict[str, Any] | None]:
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", "llama3"):
        raise CheckpointError(f"{where}: rope_type {kind!r} is not supported; zupu's Llama reads 'default' and "
                              "'llama3' rotary scaling")
    scaling = None if kind == "default" else {k: v for k, v in params.items() if k not in ("rope_theta", "type")}
    return float(theta), scaling


def config_from_hf(cfg: dict[str, Any], where: str) -> LlamaConfig:
    for flag in ("attention_bias", "mlp_bias"):
        if cfg.get(flag):
            raise CheckpointError(f"{where}: {flag}=true is not supported; zupu's Llama has bias-free projections")
    if cfg.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{where}: hidden_act {cfg['hidden_act']!r} is not supported (Llama's is silu)")
    head_dim = cfg.get("head_dim")
    if head_dim is not None and head_dim != cfg["hidden_size"] // cfg["num_attention_heads"]:
        raise CheckpointError(f"{where}: head_dim {head_dim} != hidden_size / num_attention_heads; zupu's Llama "
                              "needs them equal")
    theta, scaling = _rope(cfg, where)
    values = {k: v for k, v in cfg.items() if k not in ("rope_scaling", "rope_theta")}
    return keymap.config_from_hf(LlamaConfig, {**values, "rope_theta": theta, "rope_scaling": scaling}, where)


def from_state(config: LlamaConfig, state: dict[str, torch.Tensor], where: str,
               dtype: torch.dtype | None = torch.float32) -> Llama:
    """A Llama from HF-named tensors (a folder's or a GGUF's, renamed), which become its parameters: the model
    is built on the meta device, so no time goes into a random init that the weights would overwrite."""
    if config.tie_word_embeddings:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}  # HF may store the tied copy
    dtype = model_dtype(state, dtype, where)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    with torch.device("meta"):
        model = Llama(config)
    names = names_for(config)
    keymap.from_hf(model, state, lambda k: names("embed_tokens.weight") if k == "lm_head.weight"
                   and config.tie_word_embeddings else names(k), where, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    # the rotary rates are a buffer outside the state dict: computed again, off the meta device
    model.rotary = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling)
    return model.eval()


def from_pretrained(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32) -> Llama:
    """Load an HF LlamaForCausalLM folder (config.json + weights), never touching the network."""
    path = Path(path)
    cfg, _, state = keymap.open_checkpoint(path, ARCHITECTURES, "model", "Llama")
    # a tied model's file holds only `model.*`, which open_checkpoint takes for a bare model and strips
    state = {k if k.startswith(("model.", "lm_head.")) else "model." + k: v for k, v in state.items()}
    return from_state(config_from_hf(cfg, str(path / CONFIG)), state, str(path / WEIGHTS), dtype)


def save_pretrained(model: Llama, out: str | os.PathLike, zupu_meta: dict[str, Any]) -> None:
    """Write a folder that `transformers`' LlamaForCausalLM.from_pretrained loads directly."""
    c = model.config
    rope = {"rope_type": "default", **(c.rope_scaling or {}), "rope_theta": c.rope_theta}
    state = {k: v for k, v in model.state_dict().items() if not (k == "lm_head.weight" and c.tie_word_embeddings)}
    out = Path(out)
    save_state(keymap.to_hf(state, names_for(c)), out / WEIGHTS)
    cfg = {k: v for k, v in vars(c).items() if k not in ("rope_scaling", "rope_theta")}
    write_json(out / CONFIG, {**cfg, "rope_parameters": rope, "rope_theta": c.rope_theta,
                              "rope_scaling": c.rope_scaling, "head_dim": c.head_dim, "hidden_act": "silu",
                              "attention_bias": False, "mlp_bias": False, "model_type": "llama",
                              "architectures": ["LlamaForCausalLM"], "zupu": zupu_meta})
