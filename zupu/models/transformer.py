"""The Transformer (2017): an encoder-decoder built from attention alone.

A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez, L. Kaiser, I. Polosukhin,
"Attention Is All You Need", NeurIPS 2017. https://arxiv.org/abs/1706.03762

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V                           (eq. 1)
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)
    FFN(x)             = max(0, x W_1 + b_1) W_2 + b_2                              (eq. 2)
    input              x_0 = sqrt(d_model) E[token] + PE(pos),  PE the fixed sinusoids  (sec. 3.4, 3.5)
    sublayer           x = LayerNorm(x + Dropout(Sublayer(x)))     (post-LN, sec. 5.4; `pre_ln` for
                       x = x + Dropout(Sublayer(LayerNorm(x))), with a final LayerNorm on each stack)
    encoder layer      self-attention over the source (padding masked), FFN
    decoder layer      causal self-attention, attention to the encoder output (cross), FFN
    output             p(y_i | y_<i, x) = softmax(h_i E^T)   (the target embedding, tied, sec. 3.4)
    loss               label-smoothed cross-entropy, eps_ls = 0.1 (sec. 5.4):
                       (1 - eps) * -log p(y) + eps * mean_v(-log p(v)), padding positions ignored
    schedule           lr = d^-0.5 min(s^-0.5, s warmup^-1.5)   (eq. 3; `zupu.train.optim`, "noam")

Masks are boolean, True where a query may look: the source padding mask (B, 1, 1, S) in encoder
self-attention and in cross-attention, the causal mask in decoder self-attention. Decoding keeps a
`KVCache` per decoder layer for self-attention (one new row per step) and one for cross-attention (the
encoder's keys and values, projected once). `generate(src, beam_size=1)` is greedy; `beam_size > 1` is
beam search with length-normalised scores (`zupu.sampling.beam`), as in seq2seq-attention.

Hugging Face: `MarianMTModel` is this model up to layout (post-LN, fixed sinusoids, biased q/k/v/out
projections); `zupu.hf.transformer` maps it both ways exactly, permuting the model dimension to turn the
paper's interleaved sinusoids into Marian's sines-then-cosines. A pre-LN model has no Marian form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from zupu.errors import SettingError
from zupu.nn import Block, FeedForward, KVCache, MultiHeadAttention, padding_mask, sinusoidal
from zupu.sampling import beam_search


@dataclass
class TransformerConfig:  # field names follow transformers' MarianConfig where the idea is the same
    src_vocab_size: int = 4000
    tgt_vocab_size: int = 4000
    d_model: int = 512
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    activation_function: str = "relu"
    max_position_embeddings: int = 256
    dropout: float = 0.1  # P_drop, on sublayer outputs and on embeddings + positions
    attention_dropout: float = 0.0
    scale_embedding: bool = True  # multiply embeddings by sqrt(d_model)
    pre_ln: bool = False  # the paper is post-LN
    tie_word_embeddings: bool = True  # output projection = target embedding
    label_smoothing: float = 0.1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2


class Transformer(nn.Module):
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = c = config
        D = c.d_model
        self.src_embed = nn.Embedding(c.src_vocab_size, D, padding_idx=c.pad_token_id)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, D, padding_idx=c.pad_token_id)
        self.register_buffer("positions", sinusoidal(c.max_position_embeddings, D), persistent=False)
        norm = partial(nn.LayerNorm, eps=c.layer_norm_eps)
        self.encoder = nn.ModuleList(
            Block(D, attn=MultiHeadAttention(D, c.encoder_attention_heads, dropout=c.attention_dropout),
                  mlp=FeedForward(D, c.encoder_ffn_dim, c.activation_function),
                  norm=norm, pre_ln=c.pre_ln, dropout=c.dropout)
            for _ in range(c.encoder_layers))
        self.decoder = nn.ModuleList(  # sublayers built in their order in the layer, as the initial weights were
            Block(D, attn=MultiHeadAttention(D, c.decoder_attention_heads, dropout=c.attention_dropout),
                  cross_attn=MultiHeadAttention(D, c.decoder_attention_heads, dropout=c.attention_dropout, cross=True),
                  mlp=FeedForward(D, c.decoder_ffn_dim, c.activation_function),
                  norm=norm, pre_ln=c.pre_ln, dropout=c.dropout)
            for _ in range(c.decoder_layers))
        # pre-LN leaves the residual stream unnormalised, so each stack ends with a LayerNorm
        self.encoder_ln = nn.LayerNorm(D, eps=c.layer_norm_eps) if c.pre_ln else nn.Identity()
        self.decoder_ln = nn.LayerNorm(D, eps=c.layer_norm_eps) if c.pre_ln else nn.Identity()
        self.lm_head = nn.Linear(D, c.tgt_vocab_size, bias=False)
        self.drop = nn.Dropout(c.dropout)
        for emb in (self.src_embed, self.tgt_embed):  # N(0, 1/d): sqrt(d) E[token] then has unit variance
            nn.init.normal_(emb.weight, std=D**-0.5)
            with torch.no_grad():
                emb.weight[c.pad_token_id].zero_()
        if c.tie_word_embeddings:
            self.lm_head.weight = self.tgt_embed.weight

    def embed(self, emb: nn.Embedding, ids: torch.Tensor, past: int = 0) -> torch.Tensor:
        t = ids.shape[1]
        if past + t > self.config.max_position_embeddings:
            raise SettingError(f"sequence of {past + t} tokens is longer than max_position_embeddings "
                               f"{self.config.max_position_embeddings}; crop it or build a larger config")
        scale = math.sqrt(self.config.d_model) if self.config.scale_embedding else 1.0
        return self.drop(emb(ids) * scale + self.positions[past : past + t])  # (B, T, D)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) right-padded ids -> memory (B, S, D) and the source mask (B, 1, 1, S)."""
        mask = padding_mask(src != self.config.pad_token_id)
        x = self.embed(self.src_embed, src)
        for block in self.encoder:
            x = block(x, mask)
        return self.encoder_ln(x), mask

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
               caches: list[tuple[KVCache, KVCache]] | None = None) -> torch.Tensor:
        """tgt_in (B, T) -> logits (B, T, V). With `caches` (from `new_caches`), tgt_in continues the
        tokens already decoded."""
        past = caches[0][0].length if caches else 0
        x = self.embed(self.tgt_embed, tgt_in, past)
        for i, block in enumerate(self.decoder):
            cache, cross_cache = caches[i] if caches else (None, None)
            x = block(x, causal=True, memory=memory, memory_mask=src_mask, cache=cache, cross_cache=cross_cache)
        return self.lm_head(self.decoder_ln(x))

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src (B, S), tgt_in (B, T) = [bos, y_1, ..., y_{T-1}] -> logits (B, T, V)."""
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)

    def loss(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Label-smoothed cross-entropy per target token; tgt (B, T+1) = [bos, y..., eos, pad...]."""
        logits = self(src, tgt[:, :-1])
        return label_smoothed_nll(logits, tgt[:, 1:], self.config.label_smoothing, self.config.pad_token_id)

    # -- generation ---------------------------------------------------------------------------
    def new_caches(self, max_len: int, src_len: int) -> list[tuple[KVCache, KVCache]]:
        return [(KVCache(max_len), KVCache(src_len)) for _ in self.decoder]

    @torch.no_grad()
    def generate(self, src: torch.Tensor, max_new_tokens: int = 40, beam_size: int = 1) -> list[list[int]]:
        """Translate src (B, S): a list of B token-id lists (no bos/eos). Greedy when beam_size == 1."""
        c = self.config
        B = src.shape[0]
        memory, mask = self.encode(src)
        if beam_size > 1:  # each sentence k times, rows b*k .. b*k+k-1
            rows = torch.arange(B, device=src.device).repeat_interleave(beam_size)
            memory, mask = memory[rows], mask[rows]
        caches = self.new_caches(max_new_tokens, src.shape[1])

        def next_logprobs(y: torch.Tensor) -> torch.Tensor:  # y (N,) -> (N, V)
            return self.decode(y[:, None], memory, mask, caches)[:, -1].log_softmax(-1)

        if beam_size > 1:
            def reorder(rows: torch.Tensor) -> None:
                for cache, _ in caches:  # the cross caches hold the same source rows for every hypothesis
                    cache.reorder(rows)

            return beam_search(next_logprobs, reorder, B, beam_size, c.bos_token_id, c.eos_token_id,
                               c.pad_token_id, max_new_tokens, src.device)
        y = torch.full((B,), c.bos_token_id, dtype=torch.long, device=src.device)
        out = []
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        for _ in range(max_new_tokens):
            y = next_logprobs(y).argmax(-1)
            out.append(y)
            done |= y == c.eos_token_id
            if done.all():
                break
        tokens = torch.stack(out, dim=1).tolist()  # (B, T)
        return [row[: row.index(c.eos_token_id)] if c.eos_token_id in row else row for row in tokens]


def label_smoothed_nll(logits: torch.Tensor, targets: torch.Tensor, eps: float, ignore_index: int) -> torch.Tensor:
    """Mean over non-ignored positions of (1 - eps) * -log p(y) + eps * mean_v(-log p(v)) (sec. 5.4)."""
    logp = logits.reshape(-1, logits.shape[-1]).log_softmax(-1)  # (N, V)
    y = targets.reshape(-1)  # (N,)
    keep = y != ignore_index
    nll = -logp.gather(1, y.clamp(min=0)[:, None]).squeeze(1)  # (N,)
    smooth = -logp.mean(-1)  # (N,): cross-entropy against the uniform distribution
    return (((1 - eps) * nll + eps * smooth) * keep).sum() / keep.sum().clamp(min=1)


PRESETS = {
    "base": TransformerConfig(),  # the paper's base model (65M parameters with its 37k shared vocabulary)
    "tiny": TransformerConfig(src_vocab_size=20, tgt_vocab_size=24, d_model=16, encoder_layers=1, decoder_layers=1,
                              encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                              decoder_ffn_dim=32, max_position_embeddings=64),
}
