"""GPT: a decoder-only Transformer pre-trained to predict the next token (GPT-1, GPT-2, GPT-3).

A. Radford, K. Narasimhan, T. Salimans, I. Sutskever, "Improving Language Understanding by Generative
Pre-Training" (GPT-1, 2018), https://cdn.openai.com/research-covers/language-unsupervised/language_understanding_paper.pdf
A. Radford, J. Wu, R. Child, D. Luan, D. Amodei, I. Sutskever, "Language Models are Unsupervised
Multitask Learners" (GPT-2, 2019), https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf
T. Brown et al., "Language Models are Few-Shot Learners" (GPT-3, 2020), https://arxiv.org/abs/2005.14165

The model reads tokens u_1..u_T and gives the distribution of each next token (GPT-1, eq. 2):

    h_0 = U W_e + W_p                        token embeddings plus learned position embeddings
    h_l = transformer_block(h_{l-1})         l = 1..n, masked (causal) self-attention + MLP
    P(u) = softmax(h_n W_e^T)                 the output layer reuses the token embedding (tied)

trained by maximising sum_i log P(u_i | u_{i-k}, ..., u_{i-1}) over a window of k tokens (eq. 1).

The three generations differ in a few switches, all fields of `GPTConfig`:
- GPT-1: post-LN blocks, h = LN(h + Sublayer(h)), and GELU (`pre_ln=False`, `activation_function="gelu_new"`).
- GPT-2: "layer normalization was moved to the input of each sub-block ... and an additional layer
  normalization was added after the final self-attention block", and the residual projections start
  scaled by 1/sqrt(N) for N residual layers (`pre_ln=True` switches on all three).
- GPT-3: GPT-2 with "alternating dense and locally banded sparse attention patterns in the layers of
  the transformer, similar to the Sparse Transformer" (`attention_types=("global", "local")`: each local
  layer's query sees only the last `window_size` positions). The paper does not state the band's width.

Field names follow Hugging Face's `GPT2Config`, so an HF `config.json` maps onto this one by name.
The forward pass continues a sequence from a KV cache; the decoding loop and sampling filters that drive
it live in `zupu.sampling` (`model.generate(...)` streams tokens through it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from zupu import sampling
from zupu.errors import SettingError
from zupu.nn import Block, FeedForward, KVCache, MultiHeadAttention, PackedLinear, decoder_mask


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    n_positions: int = 1024  # the context window
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    activation_function: str = "gelu_new"  # tanh-approximate GELU: GPT-2's, and GPT-1's (HF's OpenAI-GPT "gelu")
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    pre_ln: bool = True  # GPT-2/3: pre-LN blocks, a final LayerNorm, scaled residual init; False: GPT-1
    attention_types: tuple[str, ...] = ("global",)  # cycled over the layers: "global" (dense) or "local"
    window_size: int = 256  # how far back a "local" layer's queries see (GPT-3's banded layers)

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise SettingError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        bad = set(self.attention_types) - {"global", "local"}
        if bad or not self.attention_types:
            raise SettingError(f"attention_types must be a non-empty list of 'global'/'local', got "
                               f"{list(self.attention_types)}")

    def layer_attention(self, layer: int) -> str:
        return self.attention_types[layer % len(self.attention_types)]

    @property
    def sparse(self) -> bool:
        return "local" in self.attention_types


class GPT(nn.Module):
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.n_positions, c.n_embd)
        self.drop = nn.Dropout(c.embd_pdrop)
        self.h = nn.ModuleList(
            Block(c.n_embd,
                  attn=MultiHeadAttention(c.n_embd, c.n_head, dropout=c.attn_pdrop,
                                          window=c.window_size if c.layer_attention(i) == "local" else None),
                  mlp=FeedForward(c.n_embd, c.n_inner or 4 * c.n_embd, c.activation_function),
                  norm=partial(nn.LayerNorm, eps=c.layer_norm_epsilon), pre_ln=c.pre_ln, dropout=c.resid_pdrop)
            for i in range(c.n_layer)
        )
        self.ln_f = nn.LayerNorm(c.n_embd, eps=c.layer_norm_epsilon) if c.pre_ln else None
        self.lm_head = PackedLinear(c.n_embd, c.vocab_size, bias=False)
        self.apply(self._init_weights)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight
        if c.pre_ln:  # GPT-2: residual projections scaled by 1/sqrt(N), N = 2 residual layers per block
            for block in self.h:
                for proj in (block.attn.proj, block.mlp.proj):
                    nn.init.normal_(proj.weight, std=c.initializer_range / math.sqrt(2 * c.n_layer))

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.config.initializer_range)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters; `non_embedding` leaves out token and position embeddings (Kaplan et al.'s N)."""
        n = sum(p.numel() for p in self.parameters())  # a tied lm_head is counted once
        if non_embedding:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token: 6N for the weights plus 6 * 2 * n_layer * T * n_embd for attention's
        QK^T and AV (forward 2 multiply-adds each, backward twice that), as in the PaLM appendix."""
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * seq_len * c.n_embd

    def new_caches(self, max_len: int) -> list[KVCache]:
        return [KVCache(max_len) for _ in self.h]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, caches: list[KVCache] | None = None,
                last_only: bool = False) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, vocab_size), or (B, 1, vocab_size) with `last_only`.

        attention_mask (B, past + T) holds 1 for real tokens and 0 for (left) padding; `caches` from
        `new_caches` continue a sequence, T new tokens after the `past` already stored.
        """
        b, t = input_ids.shape
        past = caches[0].length if caches else 0
        if position_ids is None:
            if past + t > self.config.n_positions:
                raise SettingError(f"{past + t} positions exceed the context window n_positions="
                                   f"{self.config.n_positions}; crop the input")
            position_ids = torch.arange(past, past + t, device=input_ids.device)[None]  # (1, T)
        mask = None if attention_mask is None else decoder_mask(attention_mask, past, t)
        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, mask, causal=True, cache=caches[i] if caches else None)
        if last_only:
            x = x[:, -1:]
        if self.ln_f is not None:
            x = self.ln_f(x)
        return self.lm_head(x)

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy; targets (B, T), possibly a strided view, -100 where no loss is taken."""
        logits = self(input_ids)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)

    # model.generate(input_ids, max_new_tokens, temperature=..., ...) streams the next token of every row with the
    # KV cache: the decoding loop is zupu.sampling's, shared by every causal LM, with this model as its first argument
    generate = sampling.generate


_GPT1 = dict(vocab_size=40478, n_positions=512, activation_function="gelu_new", pre_ln=False)
_GPT3 = dict(n_positions=2048, attention_types=("global", "local"))
_TINY = dict(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
             attn_pdrop=0.0)

PRESETS = {
    "tiny": GPTConfig(**_TINY),  # GPT-2 layout, for tests and the CPU
    "tiny-gpt1": GPTConfig(**{**_TINY, "activation_function": "gelu_new", "pre_ln": False}),
    "tiny-gpt3": GPTConfig(**_TINY, attention_types=("global", "local"), window_size=8),
    "gpt1": GPTConfig(**_GPT1),  # 117M
    "gpt2": GPTConfig(),  # 124M
    "gpt2-medium": GPTConfig(n_embd=1024, n_layer=24, n_head=16),  # 350M
    "gpt2-large": GPTConfig(n_embd=1280, n_layer=36, n_head=20),  # 774M
    "gpt2-xl": GPTConfig(n_embd=1600, n_layer=48, n_head=25),  # 1.5B
    "gpt3-small": GPTConfig(**_GPT3),  # 125M, GPT-3 paper table 2.1
    "gpt3-medium": GPTConfig(**_GPT3, n_embd=1024, n_layer=24, n_head=16),  # 350M
    "gpt3-large": GPTConfig(**_GPT3, n_embd=1536, n_layer=24, n_head=16),  # 760M
    "gpt3-xl": GPTConfig(**_GPT3, n_embd=2048, n_layer=24, n_head=16),  # 1.3B; the table's 24 heads x 128 != 2048
    "gpt3": GPTConfig(**_GPT3, n_embd=12288, n_layer=96, n_head=96),  # 175B: a config to read, not to build here
}
