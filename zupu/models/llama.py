"""Llama: the modern decoder-only Transformer (LLaMA 1-3, SmolLM2, Mistral's layout).

H. Touvron et al., "LLaMA: Open and Efficient Foundation Language Models", 2023, https://arxiv.org/abs/2302.13971

GPT-2's decoder with four changes, all from earlier papers (section 2.2 of LLaMA):

    pre-normalisation with RMSNorm        h = x + Attn(RMSNorm(x)),  out = h + MLP(RMSNorm(h))   (Zhang & Sennrich 2019)
    SwiGLU MLP                            MLP(x) = W_2 (SiLU(x W_gate) * (x W_up))                (Shazeer 2020)
    rotary positions (RoPE), no learned   q_m, k_n rotated by m * theta^(-2i/d), so q.k sees m - n (Su et al. 2021)
    position embeddings
    grouped-query attention (Llama 2+)    n_kv heads of keys/values, each shared by n_head / n_kv query heads

Small models (SmolLM2) tie the output layer to the token embedding. Field names follow Hugging Face's
`LlamaConfig`, so its `config.json` maps onto `LlamaConfig` by name; `rope_theta` and `rope_scaling` are
read from the checkpoint (SmolLM2-135M: theta 100000). Generation goes through `zupu.sampling.generate`
with preallocated KV caches (`new_caches`), as GPT's does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zupu import sampling
from zupu.errors import SettingError
from zupu.nn import Block, KVCache, MultiHeadAttention, PackedLinear, RMSNorm, RotaryEmbedding, SwiGLU, decoder_mask


@dataclass
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008  # SwiGLU's hidden width
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: as many as query heads (no grouping)
    max_position_embeddings: int = 2048  # the context window
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # HF's rope_scaling / rope_parameters: "default" or "llama3"
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise SettingError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                               f"{self.num_attention_heads}")

    @property
    def n_positions(self) -> int:  # the name zupu.sampling.generate reads the context window by
        return self.max_position_embeddings

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class Llama(nn.Module):
    """LlamaForCausalLM: token embedding, `num_hidden_layers` pre-RMSNorm blocks (GQA + RoPE, SwiGLU), a final
    RMSNorm and the output layer."""

    config_class = LlamaConfig

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = c = config
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(
            Block(c.hidden_size,
                  attn=MultiHeadAttention(c.hidden_size, c.num_attention_heads, bias=False,
                                          n_kv_head=c.num_key_value_heads),
                  mlp=SwiGLU(c.hidden_size, c.intermediate_size),
                  norm=partial(RMSNorm, eps=c.rms_norm_eps))
            for _ in range(c.num_hidden_layers)
        )
        self.norm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.lm_head = PackedLinear(c.hidden_size, c.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(c.head_dim, c.rope_theta, c.rope_scaling)
        self.apply(self._init_weights)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.config.initializer_range)

    def new_caches(self, max_len: int) -> list[KVCache]:
        return [KVCache(max_len) for _ in self.layers]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, caches: list[KVCache] | None = None,
                last_only: bool = False) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, vocab_size), or (B, 1, vocab_size) with `last_only`.

        attention_mask (B, past + T): 1 for real tokens, 0 for (left) padding; position_ids (B, T) count from
        each row's first real token (`zupu.sampling.generate` passes them); `caches` continue a sequence."""
        b, t = input_ids.shape
        past = caches[0].length if caches else 0
        if position_ids is None:
            if past + t > self.config.max_position_embeddings:
                raise SettingError(f"{past + t} positions exceed the context window max_position_embeddings="
                                   f"{self.config.max_position_embeddings}; crop the input")
            position_ids = torch.arange(past, past + t, device=input_ids.device)  # (T,)
        mask = None if attention_mask is None else decoder_mask(attention_mask, past, t)
        x = self.embed_tokens(input_ids)  # (B, T, C)
        rope = self.rotary(position_ids, x.dtype)  # cos, sin: (T, hs) or (B, 1, T, hs)
        for i, block in enumerate(self.layers):
            x = block(x, mask, causal=True, cache=caches[i] if caches else None, rope=rope)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy; targets (B, T), -100 where no loss is taken."""
        logits = self(input_ids)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)

    # model.generate(input_ids, max_new_tokens, ...) streams tokens through zupu.sampling's KV-cache loop
    generate = sampling.generate


PRESETS = {
    "tiny": LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                        tie_word_embeddings=True),
    # HuggingFaceTB/SmolLM2-135M(-Instruct): 134.5M parameters, 9 query and 3 key/value heads of 64
    "smollm2-135m": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                                rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
}
