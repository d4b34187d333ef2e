"""Attention-based encoder-decoder (2014): the decoder learns where in the source to look.

D. Bahdanau, K. Cho, Y. Bengio, "Neural Machine Translation by Jointly Learning to Align and
Translate", ICLR 2015. https://arxiv.org/abs/1409.0473

    encoder    h_j = [->h_j ; <-h_j]                    a bidirectional RNN's annotations, (B, S, 2H)
    alignment  e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j)  additive attention (U_a h_j computed once)
               a_ij = exp(e_ij) / sum_k exp(e_ik)        over the real (unpadded) source positions
    context    c_i = sum_j a_ij h_j
    decoder    s_i = f(s_{i-1}, y_{i-1}, c_i)
    output     p(y_i | y_<i, x) = softmax(W_o tanh(U_o s_i + V_o E y_{i-1} + C_o c_i))

With `attention=False` the same network is the RNN encoder-decoder of Cho et al. (2014), the paper's
baseline: one fixed context c = [->h_{T_x} ; <-h_1] for every output step.

The recurrent unit f is our written-out LSTM (`zupu.nn.recurrent.LSTM`), where the paper used its
gated unit (the GRU): both gate an additive state update, and the LSTM is this tree's parent. The
decoder's LSTM reads [E y_{i-1} ; c_i]; its input weights are split into the embedding half (projected
for every step at once under teacher forcing) and `context_gates`, the context half. The paper's maxout
output layer is replaced by tanh. The decoder starts from s_0 = tanh(W_s [->h_{T_x} ; <-h_1]), c_0 = 0.

Decoding: `generate(src, beam_size=1)` is greedy; `beam_size > 1` is beam search (the paper used 12)
with scores normalised by length (`zupu.sampling.beam`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zupu.nn.recurrent import LSTM, State
from zupu.sampling import beam_search


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int = 4000
    tgt_vocab_size: int = 4000
    embed_size: int = 128
    hidden_size: int = 128  # per direction in the encoder; the decoder's state s_i has this size too
    attention_size: int = 128  # n' in the paper: the alignment model's hidden width
    attention: bool = True
    dropout: float = 0.2
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2


@dataclass
class Encoded:
    annotations: torch.Tensor  # h_j, (B, S, 2H)
    keys: torch.Tensor  # U_a h_j, (B, S, A); empty without attention
    mask: torch.Tensor  # True at real source tokens, (B, S)
    summary: torch.Tensor  # [->h_{T_x} ; <-h_1], (B, 2H)

    def index(self, rows: torch.Tensor) -> Encoded:
        return Encoded(self.annotations[rows], self.keys[rows], self.mask[rows], self.summary[rows])


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of (B, T, D) within its own length, leaving the padding where it is."""
    t = torch.arange(x.shape[1], device=x.device)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return x.gather(1, idx[:, :, None].expand_as(x))


class Seq2Seq(nn.Module):
    config_class = Seq2SeqConfig

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = c = config
        E, H, A = c.embed_size, c.hidden_size, c.attention_size
        self.src_embed = nn.Embedding(c.src_vocab_size, E, padding_idx=c.pad_token_id)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, E, padding_idx=c.pad_token_id)
        self.encoder_fwd = LSTM(E, H)
        self.encoder_bwd = LSTM(E, H)
        self.init_state = nn.Linear(2 * H, H)  # W_s
        self.decoder = LSTM(E, H)
        self.context_gates = nn.Linear(2 * H, 4 * H, bias=False)  # the c_i half of the decoder's input weights
        if c.attention:
            self.query = nn.Linear(H, A, bias=False)  # W_a
            self.key = nn.Linear(2 * H, A)  # U_a
            self.energy = nn.Linear(A, 1, bias=False)  # v_a
        self.out_state = nn.Linear(H, E)  # U_o
        self.out_prev = nn.Linear(E, E, bias=False)  # V_o
        self.out_context = nn.Linear(2 * H, E, bias=False)  # C_o
        self.lm_head = nn.Linear(E, c.tgt_vocab_size)  # W_o
        self.drop = nn.Dropout(c.dropout)

    # -- encoder ------------------------------------------------------------------------------
    def encode(self, src: torch.Tensor) -> Encoded:
        """src (B, S) token ids, right-padded -> annotations, attention keys, mask, summary."""
        mask = src != self.config.pad_token_id
        lengths = mask.sum(1).clamp(min=1)
        x = self.drop(self.src_embed(src))  # (B, S, E)
        fwd, _ = self.encoder_fwd(x)  # (B, S, H)
        bwd_rev, _ = self.encoder_bwd(reverse_padded(x, lengths))  # <-h in reversed order
        bwd = reverse_padded(bwd_rev, lengths)  # (B, S, H), <-h_j aligned with ->h_j
        annotations = torch.cat([fwd, bwd], dim=2)  # (B, S, 2H)
        rows = torch.arange(src.shape[0], device=src.device)
        summary = torch.cat([fwd[rows, lengths - 1], bwd[:, 0]], dim=1)  # [->h_{T_x} ; <-h_1], (B, 2H)
        keys = self.key(annotations) if self.config.attention else annotations[..., :0]  # (B, S, A) or (B, S, 0)
        return Encoded(annotations, keys, mask, summary)

    def start(self, enc: Encoded) -> State:
        s0 = torch.tanh(self.init_state(enc.summary))  # (B, H)
        return s0, torch.zeros_like(s0)

    # -- decoder ------------------------------------------------------------------------------
    def attend(self, s: torch.Tensor, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Context c_i from the previous decoder state s_{i-1} (B, H): (B, 2H) and weights a_i (B, S)."""
        if not self.config.attention:
            return enc.summary, None
        e = self.energy(torch.tanh(self.query(s)[:, None, :] + enc.keys)).squeeze(2)  # (B, S)
        a = e.masked_fill(~enc.mask, float("-inf")).softmax(dim=1)  # (B, S)
        return torch.bmm(a[:, None, :], enc.annotations).squeeze(1), a  # (B, 2H), (B, S)

    def step(self, gates_y: torch.Tensor, state: State, enc: Encoded):
        """One decoder step from the projected previous token (B, 4H): new state, context, weights."""
        context, a = self.attend(state[0], enc)
        state = self.decoder.step(gates_y + self.context_gates(context), state)
        return state, context, a

    def readout(self, s: torch.Tensor, y_prev: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Logits from s_i, E y_{i-1} and c_i (any leading shape)."""
        t = torch.tanh(self.out_state(s) + self.out_prev(y_prev) + self.out_context(context))
        return self.lm_head(self.drop(t))

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, return_attention: bool = False):
        """Teacher forcing: src (B, S), tgt_in (B, T) = [bos, y_1, ..., y_{T-1}] -> logits (B, T, V)
        (and the alignment weights (B, T, S) when asked)."""
        enc = self.encode(src)
        y_prev = self.drop(self.tgt_embed(tgt_in))  # (B, T, E)
        gates_y = self.decoder.project(y_prev)  # (B, T, 4H), all steps in one matmul
        state = self.start(enc)
        states, contexts, weights = [], [], []
        for i in range(tgt_in.shape[1]):
            state, context, a = self.step(gates_y[:, i], state, enc)
            states.append(state[0])
            contexts.append(context)
            weights.append(a)
        s = torch.stack(states, dim=1)  # (B, T, H)
        logits = self.readout(self.drop(s), y_prev, torch.stack(contexts, dim=1))
        if return_attention:
            return logits, torch.stack(weights, dim=1) if self.config.attention else None  # (B, T, S)
        return logits

    # -- generation ---------------------------------------------------------------------------
    def _next_logprobs(self, y: torch.Tensor, state: State, enc: Encoded):
        y_prev = self.tgt_embed(y)  # (N, E)
        state, context, a = self.step(self.decoder.project(y_prev), state, enc)
        return self.readout(state[0], y_prev, context).log_softmax(-1), state, a

    @torch.no_grad()
    def generate(self, src: torch.Tensor, max_new_tokens: int = 40, beam_size: int = 1,
                 return_attention: bool = False):
        """Translate src (B, S): a list of B token-id lists (no bos/eos). Greedy when beam_size == 1.

        With return_attention (greedy only) also the weights a_ij, a list of (T_i, S) tensors."""
        if beam_size > 1:
            if return_attention:
                raise ValueError("return_attention is only available with greedy decoding (beam_size=1)")
            return self._beam(src, max_new_tokens, beam_size)
        c = self.config
        enc = self.encode(src)
        state = self.start(enc)
        y = torch.full((src.shape[0],), c.bos_token_id, dtype=torch.long, device=src.device)
        out, weights = [], []
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_new_tokens):
            logp, state, a = self._next_logprobs(y, state, enc)
            y = logp.argmax(-1)
            out.append(y)
            weights.append(a)
            done |= y == c.eos_token_id
            if done.all():
                break
        tokens = torch.stack(out, dim=1).tolist()  # (B, T)
        seqs = [row[: row.index(c.eos_token_id)] if c.eos_token_id in row else row for row in tokens]
        if not return_attention:
            return seqs
        if not c.attention:
            return seqs, None
        att = torch.stack(weights, dim=1)  # (B, T, S)
        return seqs, [att[b, : len(seqs[b]) + 1, : int(enc.mask[b].sum())] for b in range(len(seqs))]

    def _beam(self, src: torch.Tensor, max_new_tokens: int, k: int) -> list[list[int]]:
        c = self.config
        B = src.shape[0]
        enc = self.encode(src)
        state = self.start(enc)
        rows = torch.arange(B, device=src.device).repeat_interleave(k)  # each sentence k times, (B*k,)
        enc = enc.index(rows)
        state = (state[0][rows], state[1][rows])

        def next_logprobs(y: torch.Tensor) -> torch.Tensor:  # y (B*k,) -> (B*k, V)
            nonlocal state
            logp, state, _ = self._next_logprobs(y, state, enc)
            return logp

        def reorder(survivors: torch.Tensor) -> None:
            nonlocal state
            state = (state[0][survivors], state[1][survivors])

        return beam_search(next_logprobs, reorder, B, k, c.bos_token_id, c.eos_token_id, c.pad_token_id,
                           max_new_tokens, src.device)


PRESETS = {
    "tatoeba": Seq2SeqConfig(),
    "tatoeba-no-attention": Seq2SeqConfig(attention=False),
    "tiny": Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=24, embed_size=8, hidden_size=8, attention_size=8),
}
