"""GGUF files (llama.cpp's format) -> a zupu Llama, its tokenizer and its chat template.

A GGUF holds metadata (`llama.block_count`, `tokenizer.ggml.tokens`, `tokenizer.chat_template`, ...) and
tensors, often quantised in blocks (Q4_1: 32 weights share a float16 scale and minimum, 4 bits each; Q8_0:
a scale and 8 bits each). The `gguf` package (llama.cpp's own Python reader) memory-maps the file and
dequantises each tensor to float32; any type it cannot dequantise is an error naming the tensor and type.

llama.cpp's converter permutes the rows of q_proj and k_proj per head, from Llama's half-split rotary
layout (pairs (x_i, x_{i+d/2})) to interleaved pairs (x_{2i}, x_{2i+1}); loading undoes it, as
transformers' GGUF loader does. The tokenizer is GPT-2-style byte-level BPE (`tokenizer.ggml.model` "gpt2")
rebuilt from the vocabulary and merges (`zupu.tokenizers.FastBPE`); control tokens (`token_type` 3) are its
special tokens, and `tokenizer.chat_template` its chat template.

    GGUF                                HF (then zupu through zupu.hf.llama's key map)
    token_embd / output_norm / output   model.embed_tokens / model.norm / lm_head
    blk.{i}.attn_{q,k,v,output}         model.layers.{i}.self_attn.{q,k,v,o}_proj
    blk.{i}.ffn_{gate,up,down}          model.layers.{i}.mlp.{gate,up,down}_proj
    blk.{i}.attn_norm / ffn_norm        model.layers.{i}.input_layernorm / post_attention_layernorm
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zupu.errors import CheckpointError, SettingError
from zupu.hf import llama as hf_llama
from zupu.models.llama import Llama, LlamaConfig
from zupu.nn import Int4Linear
from zupu.tokenizers.fast import FastBPE

_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
_CONTROL = 3  # llama.cpp's token type for special (control) tokens


def hf_name(name: str) -> str | None:
    """GGUF tensor name -> HF LlamaForCausalLM key, or None for a tensor zupu's Llama has no place for."""
    stem, _, param = name.rpartition(".")
    if stem in _GLOBAL:
        return f"{_GLOBAL[stem]}.{param}"
    if (m := re.fullmatch(r"blk\.(\d+)\.(\w+)", stem)) and m.group(2) in _LAYER:
        return f"model.layers.{m.group(1)}.{_LAYER[m.group(2)]}.{param}"
    return None


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's per-head row order of q/k (interleaved rotary pairs) back to Llama's half-split one:
    rows (n_head, hs/2, 2) -> (n_head, 2, hs/2)."""
    return w.reshape(n_head, -1, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass
class GGUF:
    """An open GGUF file: its metadata by key, and its tensors on demand."""

    path: Path

    @cached_property
    def reader(self) -> Any:
        import gguf

        if not self.path.is_file():
            raise CheckpointError(f"{self.path} is missing: expected a GGUF file (llama.cpp's format)")
        try:
            return gguf.GGUFReader(self.path)
        except (ValueError, OSError, IndexError, KeyError, TypeError) as e:  # the reader's errors on a bad file
            raise CheckpointError(f"{self.path} is not a readable GGUF file ({type(e).__name__}: {e}); "
                                  "it is corrupt or truncated — download it again") from None

    def get(self, key: str, default: Any = None) -> Any:
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise CheckpointError(f"{self.path} lacks the metadata {key!r} that a Llama GGUF carries")
        return value

    def config(self) -> LlamaConfig:
        arch = self.get("general.architecture")
        if arch != "llama":
            raise CheckpointError(f"{self.path}: general.architecture is {arch!r}; zupu loads 'llama' GGUFs")
        scaling = self.get("llama.rope.scaling.type", "none")
        if scaling != "none":
            raise CheckpointError(f"{self.path}: rope scaling {scaling!r} is not supported in GGUF files")
        shapes = {t.name: [int(n) for n in t.shape] for t in self.reader.tensors}
        if "token_embd.weight" not in shapes:
            raise CheckpointError(f"{self.path} has no token_embd.weight tensor: not a Llama GGUF")
        n_head = self.require("llama.attention.head_count")
        return LlamaConfig(
            vocab_size=shapes["token_embd.weight"][-1],  # dims innermost first: (hidden, vocab)
            hidden_size=self.require("llama.embedding_length"),
            intermediate_size=self.require("llama.feed_forward_length"),
            num_hidden_layers=self.require("llama.block_count"),
            num_attention_heads=n_head,
            num_key_value_heads=self.get("llama.attention.head_count_kv", n_head),
            max_position_embeddings=self.require("llama.context_length"),
            rms_norm_eps=float(self.require("llama.attention.layer_norm_rms_epsilon")),
            rope_theta=float(self.get("llama.rope.freq_base", 10000.0)),
            tie_word_embeddings="output.weight" not in shapes,
            bos_token_id=self.get("tokenizer.ggml.bos_token_id"),
            eos_token_id=self.get("tokenizer.ggml.eos_token_id"),
        )

    def tensors(self, config: LlamaConfig) -> dict[str, torch.Tensor]:
        """Every tensor dequantised to float32 under its HF name, q/k rows back in Llama's order."""
        from gguf import quants

        n_kv = config.num_key_value_heads or config.num_attention_heads
        state = {}
        for t in self.reader.tensors:
            name = hf_name(t.name)
            if name is None:
                raise CheckpointError(f"{self.path}: tensor {t.name!r} has no place in a Llama")
            try:
                w = quants.dequantize(t.data, t.tensor_type)
            except NotImplementedError:
                raise CheckpointError(f"{self.path}: tensor {t.name!r} is quantised as {t.tensor_type.name}, "
                                      "which the gguf package cannot dequantise; convert the file to Q8_0, Q4_1, "
                                      "F16 or F32") from None
            w = w.reshape([int(n) for n in reversed(t.shape)])  # GGUF lists dims innermost first
            if t.name.endswith("attn_q.weight"):
                w = unpermute(w, config.num_attention_heads)
            elif t.name.endswith("attn_k.weight"):
                w = unpermute(w, n_kv)
            w = np.ascontiguousarray(w, dtype=np.float32)
            state[name] = torch.from_numpy(w if w.flags.writeable else w.copy())  # F32 is a view of the read-only map
        return state

    def int4_planes(self, config: LlamaConfig) -> dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """Every Q4_1 or Q8_0 matrix kept in its blocks of 32, as `Int4Linear` planes (q as int8) under its HF
        name, q/k rows back in Llama's order: (q - 8) s + z summed over the planes is the dequantised weight
        (`Int4Linear` rounds s and z to bfloat16). Q4_1 (w = d q + m, q in [0, 15]) is one plane, s = d,
        z = m + 8 d. Q8_0 (w = d q, q an int8) is two, q = 16 hi + lo: hi + 8 with s = 16 d, z = 0, and
        lo in [0, 15] with s = d, z = 8 d."""
        from gguf import GGMLQuantizationType as Q

        n_kv = config.num_key_value_heads or config.num_attention_heads
        planes = {}
        for t in self.reader.tensors:
            name = hf_name(t.name)
            if t.tensor_type not in (Q.Q4_1, Q.Q8_0) or name is None:
                continue
            rows = int(t.shape[1])
            raw = np.asarray(t.data).reshape(rows, -1, 20 if t.tensor_type == Q.Q4_1 else 34)
            d = raw[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)  # (rows, blocks)
            if t.tensor_type == Q.Q4_1:
                m = raw[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
                qs = raw[..., 4:]
                # low nibbles hold weights 0..15 of the block, high nibbles 16..31
                q = np.concatenate([qs & 15, qs >> 4], -1).reshape(rows, -1).astype(np.int8)
                parts = [(q, d, m + 8 * d)]
            else:
                q8 = raw[..., 2:].copy().view(np.int8).reshape(rows, -1)
                parts = [((q8 >> 4) + 8, 16 * d, np.zeros_like(d)), (q8 & 15, d, 8 * d)]
            heads = (config.num_attention_heads if t.name.endswith("attn_q.weight")
                     else n_kv if t.name.endswith("attn_k.weight") else None)
            planes[name] = [tuple(torch.from_numpy(np.ascontiguousarray(a if heads is None else unpermute(a, heads)))
                                  for a in part) for part in parts]
        return planes

    def tokenizer(self) -> FastBPE:
        """The byte-level BPE tokenizer, with the chat template and end-of-turn token the file names."""
        model = self.require("tokenizer.ggml.model")
        if model != "gpt2":
            raise CheckpointError(f"{self.path}: tokenizer.ggml.model {model!r} is not supported; zupu reads "
                                  "GPT-2-style byte-level BPE ('gpt2') GGUF tokenizers")
        tokens = self.require("tokenizer.ggml.tokens")
        types = self.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        merges = [tuple(m.split(" ", 1)) for m in self.require("tokenizer.ggml.merges")]
        specials = {tok: i for i, (tok, kind) in enumerate(zip(tokens, types, strict=True)) if kind == _CONTROL}

        def token(key: str) -> str | None:
            i = self.get(key)
            return None if i is None else tokens[i]

        return FastBPE.from_vocab(tokens, merges, specials, chat_template=self.get("tokenizer.chat_template"),
                                  eos_token=token("tokenizer.ggml.eos_token_id"),
                                  bos_token=token("tokenizer.ggml.bos_token_id"))


@cache
def tokenizer(path: Path) -> FastBPE:
    """The GGUF's tokenizer, read once per process (parsing 49k tokens and merges takes seconds)."""
    return GGUF(Path(path)).tokenizer()


QUANTIZE = ("int4",)


def load(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32, quantize: str | None = None) -> Llama:
    """A Llama GGUF file -> zupu Llama with its weights dequantised (float32, or `dtype`). `quantize="int4"` keeps
    every Q4_1 / Q8_0 matrix multiplication in its 4-bit blocks (`zupu.nn.Int4Linear`, bfloat16 products, about
    4x faster decoding on AVX-512 CPUs); the token embedding stays dequantised, as its lookup reads one row."""
    if quantize not in (None, *QUANTIZE):
        raise SettingError(f"quantize={quantize!r} is not a GGUF load option; use None (exact float32 weights) or "
                           f"one of {QUANTIZE}")
    g = GGUF(Path(path))
    config = g.config()
    model = hf_llama.from_state(config, g.tensors(config), str(g.path), dtype)
    if quantize:
        planes = g.int4_planes(config)
        if not planes:
            raise SettingError(f"quantize={quantize!r}: {g.path} has no Q4_1 or Q8_0 matrices to keep in 4-bit "
                               "blocks; load it with quantize=None")
        use_int4(model, planes)
    return model


def use_int4(model: Llama, planes: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]) -> Llama:
    """Swap each Linear of `model` whose HF matrices all have `planes` (`GGUF.int4_planes`) for an Int4Linear."""
    config = model.config
    names = hf_llama.names_for(config)
    for key in [k for k in model.state_dict() if k.endswith(".weight")]:
        hf_keys = list(names("embed_tokens.weight" if key == "lm_head.weight" and config.tie_word_embeddings
                             else key))
        if key == "embed_tokens.weight" or not all(k in planes for k in hf_keys):
            continue
        merged = [tuple(torch.cat(ts) for ts in zip(*parts, strict=True))
                  for parts in zip(*(planes[k] for k in hf_keys), strict=True)]  # fused q/k/v, gate/up rows
        parent, _, child = key.removesuffix(".weight").rpartition(".")
        setattr(model.get_submodule(parent), child, Int4Linear(merged))
    return model
