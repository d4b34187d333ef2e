"""The encoder-decoder Transformer as Hugging Face's MarianMT (`MarianMTModel`), both ways.

MarianMT is the `transformers` architecture closest to the paper: post-LN, fixed sinusoids, optional
sqrt(d)-scaled embeddings, q/k/v/out projections with biases, a ReLU (or swish) FFN, no embedding
LayerNorm. What differs is layout, not maths, so the map is exact:

- Marian lays out the sinusoids as all sines then all cosines; the paper (and zupu) interleaves them.
  Both use the same frequencies, so the two tables differ by a fixed permutation P of the model
  dimension (Marian's column i is zupu's column P[i]). A post-LN Transformer is equivariant under a
  permutation of its residual stream (LayerNorm only sees means and variances; everything else
  reads or writes that stream through a matrix), so permuting the rows or columns of every weight
  that touches the stream turns one model into the other exactly.
- zupu fuses q/k/v (and the cross-attention's k/v): stacked along dim 0 in `keymap`.
- Marian starts decoding from `decoder_start_token_id` (its padding token in released models);
  zupu calls that token `bos_token_id`.
- Marian adds `final_logits_bias` to the logits; zupu has no output bias, so loading one that is not
  all zeros is an error (released opus-mt models carry one; random-init and zupu-written ones do not).
- One shared source/target vocabulary (`share_encoder_decoder_embeddings`, Marian's default) loads as two
  equal embedding tables, and is written back shared when the two are still equal.

zupu                                    Marian (under `model.`)
src_embed / tgt_embed                   encoder.embed_tokens / decoder.embed_tokens, or `shared`
{encoder,decoder}.{i}.attn.qkv          {encoder,decoder}.layers.{i}.self_attn.{q,k,v}_proj   (stacked)
  .attn.proj / .ln1                       .self_attn.out_proj / .self_attn_layer_norm
decoder.{i}.cross_attn.q / .kv          decoder.layers.{i}.encoder_attn.q_proj / .{k,v}_proj  (stacked)
  .cross_attn.proj / .ln_cross            .encoder_attn.out_proj / .encoder_attn_layer_norm
  .mlp.fc / .mlp.proj / .ln2              .fc1 / .fc2 / .final_layer_norm
lm_head (when untied)                   lm_head (top level)
A pre-LN zupu Transformer has no Marian form and is saved in zupu's own layout (`fits`).
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
from zupu.checkpoint import CONFIG, WEIGHTS, load_state, read_config, save_state
from zupu.errors import CheckpointError
from zupu.hf import keymap
from zupu.hf.tensors import find_weights, model_dtype
from zupu.models.transformer import Transformer, TransformerConfig

ARCHITECTURES: dict[str, type[nn.Module]] = {"MarianMTModel": Transformer}

_SUB = {  # zupu sub-module inside a layer -> Marian's
    "attn.proj": "self_attn.out_proj", "ln1": "self_attn_layer_norm", "cross_attn.q": "encoder_attn.q_proj",
    "cross_attn.proj": "encoder_attn.out_proj", "ln_cross": "encoder_attn_layer_norm", "mlp.fc": "fc1",
    "mlp.proj": "fc2", "ln2": "final_layer_norm",
}
_IGNORED = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")  # fixed tables


def key_names(shared: bool, tied: bool):
    """The `names(zupu_key) -> [HF key, ...]` map for one embedding arrangement."""
    src = "model.shared.weight" if shared else "model.encoder.embed_tokens.weight"
    tgt = "model.shared.weight" if shared else "model.decoder.embed_tokens.weight"

    def names(key: str) -> list[str]:
        if key in ("src_embed.weight", "tgt_embed.weight", "lm_head.weight"):
            return [{"src_embed.weight": src, "tgt_embed.weight": tgt}.get(key, tgt if tied else "lm_head.weight")]
        stack, i, sub, p = re.fullmatch(r"(encoder|decoder)\.(\d+)\.(.+)\.(weight|bias)", key).groups()
        stem = f"model.{stack}.layers.{i}."
        if sub == "attn.qkv":
            return [f"{stem}self_attn.{n}_proj.{p}" for n in "qkv"]
        if sub == "cross_attn.kv":
            return [f"{stem}encoder_attn.{n}_proj.{p}" for n in "kv"]
        return [f"{stem}{_SUB[sub]}.{p}"]

    return names


def residual_permutation(d_model: int) -> torch.Tensor:
    """P with marian_vector = zupu_vector[..., P]: the interleaved sin/cos columns, sines first."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def permute_residual(state: dict[str, torch.Tensor], perm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reorder the model dimension of every tensor that reads or writes the residual stream."""
    out = {}
    for key, v in state.items():
        last = key.rsplit(".", 2)[-2]  # the sub-module's own name: qkv, proj, ln1, fc, src_embed ...
        if last.startswith("ln") or last == "proj":  # writes the stream (LayerNorm, output projections)
            v = v[perm]
        elif key.endswith(".weight"):  # reads it: embeddings, lm_head, qkv / q / kv, fc
            v = v[:, perm]
        out[key] = v
    return out


def fits(model: nn.Module) -> bool:
    """Whether `model` has a MarianMT form (post-LN only)."""
    return isinstance(model, Transformer) and not model.config.pre_ln


def config_from_hf(cfg: dict[str, Any], where: str) -> TransformerConfig:
    if cfg.get("pre_ln") or cfg.get("normalize_before"):
        raise CheckpointError(f"{where}: a pre-LN model is not a MarianMT checkpoint")
    shared = cfg.get("share_encoder_decoder_embeddings", True)
    vocab = cfg.get("vocab_size", 58101)
    keep = {f.name for f in dataclasses.fields(TransformerConfig)} - {"src_vocab_size", "tgt_vocab_size",
                                                                       "bos_token_id", "pre_ln"}
    values = {k: v for k, v in cfg.items() if k in keep and v is not None}
    values.setdefault("activation_function", "swish")  # MarianConfig's defaults where zupu's differ
    values.setdefault("scale_embedding", False)
    try:
        return TransformerConfig(**values, src_vocab_size=vocab,
                                 tgt_vocab_size=vocab if shared else cfg.get("decoder_vocab_size") or vocab,
                                 bos_token_id=cfg.get("decoder_start_token_id", cfg.get("pad_token_id", 58100)))
    except TypeError as e:
        raise CheckpointError(f"{where} is not a valid TransformerConfig: {e}") from None


def from_pretrained(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32) -> nn.Module:
    """Load an HF MarianMT checkpoint directory (config.json + weights), its floating-point weights as `dtype`
    (`None` keeps the checkpoint's); never touches the network."""
    path = Path(path)
    cfg = read_config(path)
    arch = (cfg.get("architectures") or ["MarianMTModel"])[0]
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path / CONFIG}: architecture {arch!r} is not one zupu's transformer loads; "
                              f"known: {', '.join(ARCHITECTURES)}")
    weights = find_weights(path)  # any weights layout: one file, shards, or pytorch_model.bin
    where = str(weights)
    state = load_state(weights)
    model = Transformer(config_from_hf(cfg, str(path / CONFIG))).to(model_dtype(state, dtype, where))
    bias = state.get("final_logits_bias")
    if bias is not None and bool(bias.any()):
        raise CheckpointError(f"{where}: final_logits_bias is not all zeros; zupu's Transformer has no output bias")
    shared = cfg.get("share_encoder_decoder_embeddings", True)
    tied = model.config.tie_word_embeddings
    names = key_names(shared, tied)
    ignore = [*_IGNORED, "final_logits_bias"]
    if shared:  # older transformers also wrote the tied copies of `model.shared`
        ignore += ["model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"]
    if tied:
        ignore.append("lm_head.weight")
    keymap.from_hf(model, state, names, where, ignore)
    inverse = torch.argsort(residual_permutation(model.config.d_model))
    own = model.state_dict()
    with torch.no_grad():
        for key, v in permute_residual(own, inverse).items():
            own[key].copy_(v)
    return model.eval()


def save_pretrained(model: nn.Module, out: str | os.PathLike, zupu_meta: dict[str, Any]) -> None:
    """Write a folder `transformers` loads directly (`MarianMTModel.from_pretrained`)."""
    if not fits(model):
        raise CheckpointError(f"{type(model).__name__} (pre_ln={getattr(model.config, 'pre_ln', None)}) has no "
                              "MarianMT form: Marian is post-LN")
    c = model.config
    out = Path(out)
    shared = c.src_vocab_size == c.tgt_vocab_size and torch.equal(model.src_embed.weight, model.tgt_embed.weight)
    state = permute_residual(model.state_dict(), residual_permutation(c.d_model))
    hf = keymap.to_hf(state, key_names(shared, c.tie_word_embeddings))
    hf["final_logits_bias"] = torch.zeros(1, c.tgt_vocab_size)
    save_state(hf, out / WEIGHTS)
    write_json(out / CONFIG, {**dataclasses.asdict(c), "vocab_size": c.src_vocab_size,
                              "decoder_vocab_size": c.tgt_vocab_size, "share_encoder_decoder_embeddings": shared,
                              "decoder_start_token_id": c.bos_token_id, "is_encoder_decoder": True,
                              "model_type": "marian", "architectures": ["MarianMTModel"], "zupu": zupu_meta})
