"""Hugging Face checkpoints <-> zupu GPT: `GPT2LMHeadModel` (model_type gpt2) and `OpenAIGPTLMHeadModel`
(model_type openai-gpt).

The mapping is names plus one transpose: HF keeps GPT's projections as `Conv1D` modules whose weight is
(in, out), the transpose of `nn.Linear`'s (out, in).

    HF (after the optional "transformer." prefix)   zupu GPT
    wte / tokens_embed                            wte
    wpe / positions_embed                         wpe
    h.{i}.ln_1, h.{i}.ln_2                        h.{i}.ln1, h.{i}.ln2
    h.{i}.attn.c_attn, h.{i}.attn.c_proj          h.{i}.attn.qkv, h.{i}.attn.proj        (weights transposed)
    h.{i}.mlp.c_fc, h.{i}.mlp.c_proj              h.{i}.mlp.fc, h.{i}.mlp.proj           (weights transposed)
    ln_f (GPT-2 only)                             ln_f
    lm_head                                       lm_head (tied to wte unless tie_word_embeddings is false)

A GPT-3 preset (banded local attention layers) has no HF counterpart that computes the same thing, so it
is saved in zupu's own layout (config fields + zupu weights), which `zupu.from_pretrained` also reads.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import torch

from zupu.atomic import write_json
from zupu.checkpoint import CONFIG, WEIGHTS, load_model, load_state, read_config, save_state
from zupu.errors import CheckpointError, ZupuError
from zupu.hf.tensors import model_dtype
from zupu.models.gpt import GPT, PRESETS, GPTConfig

# HF config.json fields that map one to one onto GPTConfig fields
_SHARED = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "resid_pdrop", "embd_pdrop", "attn_pdrop",
           "layer_norm_epsilon", "initializer_range", "tie_word_embeddings")
_EMBEDDINGS = {"gpt2": ("wte", "wpe"), "openai-gpt": ("tokens_embed", "positions_embed")}
_ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "openai-gpt": "OpenAIGPTLMHeadModel"}
_LAYER = {"ln_1": "ln1", "ln_2": "ln2", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
          "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}
_ZUPU_LAYER = {v: k for k, v in _LAYER.items()}
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# causal-mask buffers that old GPT-2 / GPT-1 checkpoints carry; they hold no learned values
_BUFFERS = re.compile(r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$|(^|\.)position_ids$")


# OpenAI-GPT's `afn` names its own table (transformers' modeling_openai ACT_FNS), where "gelu" is the tanh
# approximation, not the exact GELU that "gelu" means everywhere else: afn -> zupu activation, and back
_FROM_AFN = {"gelu": "gelu_new", "relu": "relu", "silu": "silu", "swish": "silu"}
_TO_AFN = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}


def model_type_of(config: GPTConfig) -> str | None:
    """The HF model_type that computes exactly what this config does, or None."""
    if config.sparse:
        return None
    if config.pre_ln:
        return "gpt2"
    same_mlp = config.n_inner in (None, 4 * config.n_embd) and config.activation_function in _TO_AFN
    return "openai-gpt" if same_mlp else None


def hf_name(key: str, model_type: str) -> str:
    """zupu state-dict key -> HF GPT2LMHeadModel / OpenAIGPTLMHeadModel key."""
    if key == "lm_head.weight":
        return key
    wte, wpe = _EMBEDDINGS[model_type]
    head, _, rest = key.partition(".")
    if head == "h":
        layer, _, name = rest.partition(".")
        module, _, param = name.rpartition(".")
        return f"transformer.h.{layer}.{_ZUPU_LAYER[module]}.{param}"
    return "transformer." + {"wte": wte, "wpe": wpe}.get(head, head) + "." + rest


def _config_from_hf(cfg: dict[str, Any], where: Path) -> GPTConfig:
    model_type = cfg["model_type"]
    if model_type == "gpt2":
        for flag, ok in (("add_cross_attention", False), ("scale_attn_weights", True),
                         ("scale_attn_by_inverse_layer_idx", False)):
            if cfg.get(flag, ok) != ok:
                raise CheckpointError(f"{where}: {flag}={cfg[flag]} is not supported by zupu's GPT (needs {ok})")
        base = PRESETS["gpt2"]
        extra = {"n_inner": cfg.get("n_inner"), "activation_function": cfg.get("activation_function",
                                                                                 base.activation_function)}
    else:
        base = PRESETS["gpt1"]
        afn = cfg.get("afn", "gelu")
        if afn not in _FROM_AFN:
            raise CheckpointError(f"{where / CONFIG}: afn={afn!r} is not one of OpenAI-GPT's {sorted(_FROM_AFN)}")
        extra = {"activation_function": _FROM_AFN[afn], "pre_ln": False}
    values = {k: cfg[k] for k in _SHARED if k in cfg}
    try:
        return dataclasses.replace(base, **values, **extra)
    except (TypeError, ValueError, ZupuError) as e:
        raise CheckpointError(f"{where / CONFIG} is not a valid {model_type} config: {e}") from None


def from_pretrained(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32) -> GPT:
    """Load an HF GPT-2 / GPT-1 checkpoint directory (or a zupu GPT-3 one) as a zupu GPT, its floating-point
    weights as `dtype` (`None` keeps the checkpoint's)."""
    path = Path(path)
    cfg = read_config(path)
    if "model_type" not in cfg:  # zupu's own layout (a GPT-3 preset)
        return load_model(path, dtype)
    model_type = cfg["model_type"]
    if model_type not in _EMBEDDINGS:
        raise CheckpointError(f"{path / CONFIG}: model_type {model_type!r} is not GPT (expected gpt2 or openai-gpt)")
    model = GPT(_config_from_hf(cfg, path))
    theirs = load_state(path)  # any weights layout: one file, shards, or pytorch_model.bin
    theirs = {k: v for k, v in theirs.items() if not _BUFFERS.search(k)}
    if not any(k.startswith("transformer.") for k in theirs):  # saved from GPT2Model / an old GPT-2 upload
        theirs = {(k if k == "lm_head.weight" else "transformer." + k): v for k, v in theirs.items()}
    ours = model.state_dict()
    expected = {hf_name(k, model_type): k for k in ours}
    if model.config.tie_word_embeddings:
        del expected["lm_head.weight"]  # tied: HF may or may not store it; the embedding is the truth
        theirs.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(theirs))
    unexpected = sorted(set(theirs) - set(expected))
    state, shapes = {}, []
    for hf_key in expected.keys() & theirs.keys():
        w = theirs[hf_key]
        if hf_key.endswith(_CONV1D) and w.dim() == 2:
            w = w.t()  # Conv1D (in, out) -> Linear (out, in)
        key = expected[hf_key]
        if w.shape != ours[key].shape:
            shapes.append(f"{hf_key}: checkpoint {tuple(theirs[hf_key].shape)} vs model {tuple(ours[key].shape)}")
        state[key] = w
    if missing or unexpected or shapes:
        parts = [f"missing keys {missing}"] if missing else []
        parts += [f"unexpected keys {unexpected}"] if unexpected else []
        parts += [f"wrong shapes [{'; '.join(sorted(shapes))}]"] if shapes else []
        raise CheckpointError(f"{path} does not fit a {model_type} GPT with its config.json: " + ", ".join(parts))
    if model.config.tie_word_embeddings:
        state["lm_head.weight"] = state["wte.weight"]
    model.to(model_dtype(state, dtype, str(path))).load_state_dict(state)
    return model.eval()


def save_pretrained(model: GPT, out: str | os.PathLike, zupu_meta: dict[str, Any] | None = None) -> Path:
    """Write a folder `transformers` loads (GPT-2 or GPT-1 layout), or zupu's layout for a GPT-3 preset."""
    out = Path(out)
    c = model.config
    meta = {"member": "gpt", "architecture": type(model).__name__, **(zupu_meta or {})}
    model_type = model_type_of(c)
    if model_type is None:
        write_json(out / CONFIG, {**dataclasses.asdict(c), "zupu": meta})
        save_state(model.state_dict(), out / WEIGHTS)
        return out
    config: dict[str, Any] = {"architectures": [_ARCHITECTURES[model_type]], "model_type": model_type}
    config.update({k: getattr(c, k) for k in _SHARED})
    if model_type == "gpt2":
        config.update(n_inner=c.n_inner, activation_function=c.activation_function)
    else:
        config["afn"] = _TO_AFN[c.activation_function]
    gpt2_vocab = c.vocab_size > 50256  # GPT-2's BPE ends with <|endoftext|> = 50256; other vocabularies have none
    config.update(bos_token_id=50256 if gpt2_vocab and model_type == "gpt2" else None,
                  eos_token_id=50256 if gpt2_vocab and model_type == "gpt2" else None, dtype="float32", zupu=meta)
    state = {}
    for key, w in model.state_dict().items():
        if key == "lm_head.weight" and c.tie_word_embeddings:
            continue  # HF re-ties it to the token embedding on load
        hf_key = hf_name(key, model_type)
        state[hf_key] = w.t() if hf_key.endswith(_CONV1D) else w
    write_json(out / CONFIG, config)
    save_state(state, out / WEIGHTS)
    return out
