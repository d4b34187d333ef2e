"""transformer recipes.

copy-reverse: the encoder reads a random symbol string, the decoder writes it backwards. A synthetic
task (the generator below is the whole data set), chosen because its answer is exact: it checks that
masks, cross-attention, positions and decoding are right, since a model that can't see the source's
order, or that peeks at the future, cannot reach 100%. Test strings are drawn with their own seed and
never occur in training. Training follows the paper: Adam(0.9, 0.98, 1e-9), the warm-up ("noam")
schedule, label smoothing 0.1, dropout 0.1, post-LN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zupu.errors import SettingError
from zupu.models.transformer import Transformer, TransformerConfig
from zupu.recipe import Milestone, Recipe
from zupu.train.batches import TensorBatches
from zupu.train.optim import make_schedule
from zupu.train.trainer import Trainer

PAD, BOS, EOS = 0, 1, 2
FIRST_SYMBOL = 3


def reverse_task(n: int, n_symbols: int, max_len: int, seed: int, exclude: set[tuple[int, ...]] = frozenset()):
    """n distinct strings (lengths 1..max_len, symbols FIRST_SYMBOL..) not in `exclude`: src (n, max_len)
    and tgt (n, max_len + 2) = [bos, reversed..., eos], right-padded, plus the strings themselves."""
    possible = sum(n_symbols**k for k in range(1, max_len + 1))
    if n + len(exclude) > possible:
        raise SettingError(f"reverse_task: {n} distinct strings (plus {len(exclude)} held out) asked for, but only "
                           f"{possible} exist with {n_symbols} symbols and lengths 1..{max_len}; raise n_symbols "
                           "or max_len")
    g = torch.Generator().manual_seed(seed)
    seen: set[tuple[int, ...]] = set()
    while len(seen) < n:
        length = int(torch.randint(1, max_len + 1, (1,), generator=g))
        s = tuple((torch.randint(n_symbols, (length,), generator=g) + FIRST_SYMBOL).tolist())
        if s not in exclude:
            seen.add(s)
    strings = sorted(seen, key=lambda s: (len(s), s))
    src = torch.full((n, max_len), PAD, dtype=torch.long)
    tgt = torch.full((n, max_len + 2), PAD, dtype=torch.long)
    for i, s in enumerate(strings):
        src[i, : len(s)] = torch.tensor(s)
        tgt[i, : len(s) + 2] = torch.tensor([BOS, *reversed(s), EOS])
    return src, tgt, strings


def exact_match(model: Transformer, src: torch.Tensor, strings, beam_size: int = 1, batch_size: int = 500) -> float:
    model.eval()
    hits = 0
    for i in range(0, len(src), batch_size):
        out = model.generate(src[i : i + batch_size], max_new_tokens=src.shape[1] + 1, beam_size=beam_size)
        hits += sum(o == list(reversed(s)) for o, s in zip(out, strings[i : i + batch_size], strict=True))
    return hits / len(src)


@dataclass
class ReverseSettings:
    steps: int = 1200
    batch_size: int = 64
    n_symbols: int = 10
    max_len: int = 10
    n_train: int = 20000
    n_test: int = 1000
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    ffn_dim: int = 128
    dropout: float = 0.1
    label_smoothing: float = 0.1
    pre_ln: bool = False
    lr: float = 1.0  # multiplies the noam factor d^-0.5 min(s^-0.5, s warmup^-1.5)
    warmup: int = 200
    beam_size: int = 4
    threads: int = 2


class CopyReverse(Recipe):
    name = "copy-reverse"
    summary = ("reverse random symbol strings (lengths 1-10) with a post-LN encoder-decoder; exact match on "
               "unseen strings")
    Settings = ReverseSettings
    milestone = Milestone("test_exact_match", 1.0, paper="a sanity task, not in the paper; every string must come "
                          "back reversed, token for token")
    quick = {}

    def build(self, s: ReverseSettings) -> Transformer:
        return Transformer(TransformerConfig(
            src_vocab_size=FIRST_SYMBOL + s.n_symbols, tgt_vocab_size=FIRST_SYMBOL + s.n_symbols, d_model=s.d_model,
            encoder_layers=s.layers, decoder_layers=s.layers, encoder_attention_heads=s.heads,
            decoder_attention_heads=s.heads, encoder_ffn_dim=s.ffn_dim, decoder_ffn_dim=s.ffn_dim,
            max_position_embeddings=s.max_len + 2, dropout=s.dropout, pre_ln=s.pre_ln,
            label_smoothing=s.label_smoothing, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS))

    def data(self, s: ReverseSettings):
        test = reverse_task(s.n_test, s.n_symbols, s.max_len, seed=1)
        train = reverse_task(s.n_train, s.n_symbols, s.max_len, seed=0, exclude=set(test[2]))
        return train, test

    def train(self, model: Transformer, s: ReverseSettings, run) -> dict:
        threads = torch.get_num_threads()
        torch.set_num_threads(s.threads)
        try:
            (src, tgt, _), _ = self.data(s)
            batches = TensorBatches(src, tgt, batch_size=s.batch_size, seed=run.seed)
            opt = torch.optim.Adam(model.parameters(), lr=s.lr, betas=(0.9, 0.98), eps=1e-9)

            def step(batch):
                model.train()
                return {"loss": model.loss(*batch)}

            trainer = Trainer(model, step, batches, opt, s.steps, run=run,
                              scheduler=make_schedule(opt, "noam", s.steps, s.warmup, d_model=s.d_model),
                              log_every=50, checkpoint_every=max(1, s.steps // 4), desc="transformer copy-reverse")
            final = trainer.fit()
            return {**final, **self.evaluate(model, s), "train_strings": len(src)}
        finally:
            torch.set_num_threads(threads)

    def evaluate(self, model: Transformer, s: ReverseSettings) -> dict:
        _, (src, _, strings) = self.data(s)
        return {"test_exact_match": exact_match(model, src, strings),
                "test_exact_match_beam": exact_match(model, src, strings, s.beam_size),
                "test_strings": len(src)}


RECIPES = [CopyReverse()]
