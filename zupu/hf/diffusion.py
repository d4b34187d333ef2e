"""UNet checkpoints in diffusers' layout (`UNet2DModel`, `UNet2DConditionModel`), both ways.

zupu's UNet keeps diffusers' module names, so most keys are the same; the differences are zupu's fused
attention projections and its Transformer block's names:

zupu                                             diffusers
*.attentions.{j}.attn.qkv / attn.proj            *.attentions.{j}.to_q,to_k,to_v (stacked) / to_out.0
*.transformer_blocks.{k}.attn.qkv / attn.proj    *.transformer_blocks.{k}.attn1.to_q,to_k,to_v / attn1.to_out.0
*.transformer_blocks.{k}.cross_attn.q / .kv      *.transformer_blocks.{k}.attn2.to_q / attn2.to_k,to_v
*.transformer_blocks.{k}.cross_attn.proj         *.transformer_blocks.{k}.attn2.to_out.0
*.transformer_blocks.{k}.ln1 / ln_cross / ln2    *.transformer_blocks.{k}.norm1 / norm2 / norm3
*.transformer_blocks.{k}.mlp.fc / mlp.proj       *.transformer_blocks.{k}.ff.net.0.proj / ff.net.2
The GEGLU projection's halves are swapped: zupu's SwiGLU stacks [gate; up], diffusers' GEGLU [up; gate].
A diffusers config.json names its class in `_class_name` (no `model_type`); the registry routes on it.
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
from zupu.checkpoint import CONFIG, DIFFUSERS_LAYOUT, config_from_dict, load_into, read_config, save_state
from zupu.errors import CheckpointError
from zupu.hf import keymap
from zupu.hf.tensors import model_dtype, read_tensors
from zupu.models.diffusion.unet import UNet, UNetConfig
from zupu.models.diffusion.vae import TinyAutoencoder, TinyAutoencoderConfig

CLASSES = ("UNet2DModel", "UNet2DConditionModel")
# diffusers options zupu's UNet does not have, with the one value it supports (None: the key may be absent)
_FIXED = {"act_fn": "silu", "resnet_time_scale_shift": "default", "time_embedding_type": "positional",
          "class_embed_type": None, "addition_embed_type": None, "only_cross_attention": False,
          "dual_cross_attention": False, "conv_in_kernel": 3, "conv_out_kernel": 3, "downsample_type": "conv",
          "upsample_type": "conv", "encoder_hid_dim": None, "time_cond_proj_dim": None, "attention_type": "default",
          "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": False, "timestep_post_act": None,
          "time_embedding_dim": None, "attn_norm_num_groups": None, "mid_block_only_cross_attention": None,
          "cross_attention_norm": None, "reverse_transformer_layers_per_block": None,
          "class_embeddings_concat": False, "time_embedding_act_fn": None}
_CONDITION_ONLY = ("cross_attention_dim", "transformer_layers_per_block", "use_linear_projection",
                   "num_attention_heads")
_GEGLU = "ff.net.0.proj."
WEIGHTS = "diffusion_pytorch_model.safetensors"  # the name diffusers looks for


def names(key: str) -> list[str]:
    """zupu state-dict key -> diffusers key(s)."""
    if m := re.fullmatch(r"(.*\.transformer_blocks\.\d+)\.(.+)", key):
        block, rest = m.groups()
        rest = re.sub(r"^(attn|cross_attn)\.proj\.", lambda g: ("attn1" if g[1] == "attn" else "attn2") + ".to_out.0.",
                      rest)
        if rest.startswith("attn.qkv."):
            return [f"{block}.attn1.to_{n}.{rest.removeprefix('attn.qkv.')}" for n in "qkv"]
        if rest.startswith("cross_attn.kv."):
            return [f"{block}.attn2.to_{n}.{rest.removeprefix('cross_attn.kv.')}" for n in "kv"]
        for zupu, theirs in (("cross_attn.q.", "attn2.to_q."), ("ln1.", "norm1."), ("ln_cross.", "norm2."),
                             ("ln2.", "norm3."), ("mlp.fc.", _GEGLU), ("mlp.proj.", "ff.net.2.")):
            rest = rest.replace(zupu, theirs, 1) if rest.startswith(zupu) else rest
        return [f"{block}.{rest}"]
    if m := re.fullmatch(r"(.*\.attentions\.\d+)\.attn\.(qkv|proj)\.(weight|bias)", key):
        where, part, p = m.groups()
        return [f"{where}.to_{n}.{p}" for n in "qkv"] if part == "qkv" else [f"{where}.to_out.0.{p}"]
    return [key]


def _swap_geglu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """[a; b] <-> [b; a] on the GEGLU projections (its own inverse)."""
    out = {}
    for k, v in state.items():
        if _GEGLU in k:
            first, second = v.chunk(2, 0)
            v = torch.cat([second, first])
        out[k] = v
    return out


def config_from_diffusers(cfg: dict[str, Any], where: str) -> UNetConfig:
    cls = cfg.get("_class_name")
    if cls not in CLASSES:
        raise CheckpointError(f"{where}: _class_name {cls!r} is not a UNet zupu loads ({', '.join(CLASSES)})")
    for key, value in _FIXED.items():
        if cfg.get(key, value) != value:
            raise CheckpointError(f"{where}: {key}={cfg[key]!r} is not supported by zupu's UNet (it has {value!r})")
    for key in ("layers_per_block", "transformer_layers_per_block"):
        if isinstance(cfg.get(key), list):
            raise CheckpointError(f"{where}: a {key} per block is not supported; zupu's UNet takes one number")
    values = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if cls == "UNet2DConditionModel":
        values.setdefault("cross_attention_dim", 1280)  # diffusers' default
        values.setdefault("mid_block_type", "UNetMidBlock2DCrossAttn")
    else:
        values = {k: v for k, v in values.items() if k not in _CONDITION_ONLY}
    if isinstance(values.get("sample_size"), list):
        raise CheckpointError(f"{where}: a non-square sample_size is not supported")
    return config_from_dict(UNetConfig, values, where, strict=False)


def config_to_diffusers(config: UNetConfig) -> dict[str, Any]:
    cfg = dataclasses.asdict(config)
    if config.cross_attention_dim is None:
        return {"_class_name": "UNet2DModel", **{k: v for k, v in cfg.items() if k not in _CONDITION_ONLY}}
    cfg.pop("add_attention")
    return {"_class_name": "UNet2DConditionModel", **cfg}


def from_pretrained(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32) -> nn.Module:
    """Load a diffusers UNet folder (config.json + weights); never touches the network."""
    path = Path(path)
    model = UNet(config_from_diffusers(read_config(path), str(path / CONFIG)))
    state = _swap_geglu(read_tensors(path))
    model.to(model_dtype(state, dtype, str(path)))
    keymap.from_hf(model, state, names, str(path / WEIGHTS))
    return model.eval()


def save_pretrained(model: nn.Module, out: str | os.PathLike, zupu_meta: dict[str, Any]) -> None:
    """Write a folder diffusers loads directly (`UNet2DModel` / `UNet2DConditionModel.from_pretrained`)."""
    if not isinstance(model, UNet):
        raise CheckpointError(f"{type(model).__name__} has no diffusers layout; only zupu's UNet has")
    out = Path(out)
    save_state(_swap_geglu(keymap.to_hf(model.state_dict(), names)), out / WEIGHTS)
    write_json(out / CONFIG, {**config_to_diffusers(model.config), "_diffusers_version": DIFFUSERS_LAYOUT,
                              "zupu": zupu_meta})


def fits(model: nn.Module) -> bool:
    """Only the UNet has a diffusers layout here; the tiny autoencoder keeps zupu's own."""
    return isinstance(model, UNet)


def load_taesd(folder: str | os.PathLike | None = None, name: str = "taef2") -> TinyAutoencoder:
    """The reference's `<name>_encoder.pth` and `<name>_decoder.pth` (default: the weights registry's verified
    `taef2` folder) -> zupu's TinyAutoencoder; the layer names are the same, so the state dicts load as they are."""
    from zupu import weights

    folder = Path(folder) if folder is not None else weights.fetch(name)
    model = TinyAutoencoder(TinyAutoencoderConfig())
    for part in ("encoder", "decoder"):
        path = folder / f"{name}_{part}.pth"
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: `zupu weights fetch {name}` fetches and verifies it")
        load_into(getattr(model, part), torch.load(path, map_location="cpu", weights_only=True), str(path))
    return model.eval()
