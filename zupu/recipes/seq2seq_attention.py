"""seq2seq-attention recipe: Tatoeba English -> Chinese, with and without attention, scored by sacrebleu.

Data: the 20,133 Tatoeba pairs, split deterministically by a CRC-32 of the English sentence (5% test,
2.5% validation, the rest training), so every translation of one English sentence lands on the same
side and no test sentence (English or Chinese) is seen in training. Tokenizers: a BPE for each side,
trained with Hugging Face `tokenizers` on the training split only (English split on whitespace and
punctuation; Chinese as one SentencePiece-style stream, so its pieces are characters and frequent
character runs). Both models see the same batches in one loop; the attention model is the one saved.
BLEU uses sacrebleu's `zh` tokenisation (each Chinese character a token); chrF is sacrebleu's default.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from zupu import data
from zupu.errors import ZupuError
from zupu.models.seq2seq_attention import Seq2Seq, Seq2SeqConfig
from zupu.recipe import Milestone, Recipe
from zupu.train.batches import TensorBatches
from zupu.train.plots import save
from zupu.train.threads import threads
from zupu.train.trainer import Trainer

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]  # ids 0, 1, 2, 3 on both sides
PAD, BOS, EOS = 0, 1, 2
BLEU_FLOOR_QUICK = 3.0  # the quick run (3 epochs) measured 3.5 BLEU with attention, 2.1 without (tests)


def split_of(english: str) -> str:
    """'test', 'val' or 'train', fixed by the English sentence alone (stable across runs and machines)."""
    bucket = zlib.crc32(english.encode("utf-8")) % 40
    return "test" if bucket < 2 else "val" if bucket == 2 else "train"


@cache
def tatoeba_splits() -> dict[str, list[tuple[str, str]]]:
    pairs = data.load("tatoeba-cmn-eng")
    out: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    for en, zh in pairs:
        out[split_of(en)].append((en, zh))
    seen_zh = {zh for _, zh in out["train"]}
    for name in ("val", "test"):  # one reference per English sentence; no Chinese sentence seen in training
        firsts = {}
        for en, zh in out[name]:
            firsts.setdefault(en, zh)
        out[name] = [(en, zh) for en, zh in firsts.items() if zh not in seen_zh]
    return out


def train_tokenizer(texts: list[str], vocab_size: int, chinese: bool):
    """A BPE tokenizer (Hugging Face `tokenizers`) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFKC()
    if chinese:
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


@cache
def tokenizers_for(src_vocab: int, tgt_vocab: int):
    train = tatoeba_splits()["train"]
    return (train_tokenizer([en for en, _ in train], src_vocab, chinese=False),
            train_tokenizer([zh for _, zh in train], tgt_vocab, chinese=True))


def encode_pairs(pairs, src_tok, tgt_tok, max_src: int, max_tgt: int):
    """Padded id tensors: src (N, max_src), tgt (N, max_tgt + 2) = [bos, y..., eos]; too-long pairs dropped."""
    src_ids = [e.ids for e in src_tok.encode_batch([en for en, _ in pairs])]
    tgt_ids = [e.ids for e in tgt_tok.encode_batch([zh for _, zh in pairs])]
    keep = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True))
            if 0 < len(s) <= max_src and 0 < len(t) <= max_tgt]
    src = torch.full((len(keep), max_src), PAD, dtype=torch.long)
    tgt = torch.full((len(keep), max_tgt + 2), PAD, dtype=torch.long)
    for row, i in enumerate(keep):
        src[row, : len(src_ids[i])] = torch.tensor(src_ids[i])
        tgt[row, : len(tgt_ids[i]) + 2] = torch.tensor([BOS, *tgt_ids[i], EOS])
    return src, tgt, [pairs[i] for i in keep]


def trim(*batch: torch.Tensor) -> list[torch.Tensor]:
    """Cut each padded (N, L) tensor to the longest row it holds (padding is on the right)."""
    return [t[:, : int((t != PAD).sum(1).max())] for t in batch]


def teacher_forced_loss(model: Seq2Seq, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    src, tgt = trim(src, tgt)
    logits = model(src, tgt[:, :-1])  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=PAD)


def translate(model: Seq2Seq, src: torch.Tensor, tgt_tok, beam_size: int, batch_size: int = 256,
              max_new_tokens: int = 40) -> list[str]:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(src), batch_size):
            (chunk,) = trim(src[i : i + batch_size])
            out += [tgt_tok.decode(ids) for ids in model.generate(chunk, max_new_tokens, beam_size=beam_size)]
    return out


def score(hyps: list[str], refs: list[str]) -> dict[str, float]:
    import sacrebleu

    return {"bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score,
            "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score}


class Pair(nn.Module):
    """The attention model and its no-attention twin, trained in one loop on the same batches."""

    def __init__(self, attention: Seq2Seq, baseline: Seq2Seq):
        super().__init__()
        self.attention, self.baseline = attention, baseline


@dataclass
class TatoebaSettings:
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    embed_size: int = 128
    hidden_size: int = 128
    attention_size: int = 128
    dropout: float = 0.2
    src_vocab: int = 4000
    tgt_vocab: int = 4000
    max_src_tokens: int = 16
    max_tgt_tokens: int = 20
    grad_clip: float = 1.0  # per model, inside the step
    beam_size: int = 5
    test_limit: int = 0  # score only the first N test sentences (0: all)
    threads: int = 1  # a loop of small ops: one thread was far faster than two on the shared 2-core machine


class Tatoeba(Recipe):
    name = "tatoeba-en-zh"
    summary = ("Tatoeba English -> Chinese: bidirectional LSTM encoder, additive attention, beam search; "
               "the same net without attention as the baseline; sacrebleu BLEU/chrF")
    Settings = TatoebaSettings
    milestone = Milestone("bleu_gain", 2.0, paper="Bahdanau et al. (2015) tab. 1: RNNsearch-50 26.75 vs "
                          "RNNencdec-50 17.82 BLEU (WMT'14 en-fr, all sentences)")
    quick = {"epochs": 3, "test_limit": 300, "beam_size": 3}

    def config(self, s: TatoebaSettings, attention: bool) -> Seq2SeqConfig:
        src_tok, tgt_tok = tokenizers_for(s.src_vocab, s.tgt_vocab)
        return Seq2SeqConfig(src_tok.get_vocab_size(), tgt_tok.get_vocab_size(), s.embed_size, s.hidden_size,
                             s.attention_size, attention, s.dropout, PAD, BOS, EOS)

    def build(self, s: TatoebaSettings) -> Seq2Seq:
        return Seq2Seq(self.config(s, attention=True))

    def tensors(self, s: TatoebaSettings, name: str):
        src_tok, tgt_tok = tokenizers_for(s.src_vocab, s.tgt_vocab)
        pairs = tatoeba_splits()[name]
        if name == "test" and s.test_limit:
            pairs = pairs[: s.test_limit]
        return encode_pairs(pairs, src_tok, tgt_tok, s.max_src_tokens, s.max_tgt_tokens)

    def train(self, model: Seq2Seq, s: TatoebaSettings, run) -> dict:
        with threads(s.threads):
            return self._train(model, s, run)

    def _train(self, model: Seq2Seq, s: TatoebaSettings, run) -> dict:
        baseline = Seq2Seq(self.config(s, attention=False))
        pair = Pair(model, baseline)
        src, tgt, _ = self.tensors(s, "train")
        vsrc, vtgt, _ = self.tensors(s, "val")
        batches = TensorBatches(src, tgt, batch_size=s.batch_size, seed=run.seed)
        opt = torch.optim.Adam(pair.parameters(), lr=s.lr)
        steps = s.epochs * batches.steps_per_epoch

        def step(batch):
            losses = {}
            for name, net in (("loss", model), ("baseline_loss", baseline)):
                loss = teacher_forced_loss(net, *batch)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), s.grad_clip)
                losses[name] = loss.detach()
            return losses  # gradients already in .grad; the Trainer only steps the optimiser

        def evaluate():
            return {"val_loss": teacher_forced_loss(model, vsrc, vtgt).item(),
                    "baseline_val_loss": teacher_forced_loss(baseline, vsrc, vtgt).item()}

        trainer = Trainer(pair, step, batches, opt, steps, run=run,
                          scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps),
                          evaluate=evaluate, eval_every=batches.steps_per_epoch, log_every=50,
                          checkpoint_every=batches.steps_per_epoch, desc="seq2seq en->zh (attention + baseline)")
        final = trainer.fit()
        ours, theirs = self.scores(model, s), self.scores(baseline, s)
        out = {**final, **ours, **{f"baseline_{k}": v for k, v in theirs.items()},
               "train_pairs": len(src), "test_sentences": ours.pop("test_sentences")}
        out.pop("baseline_test_sentences", None)
        out["bleu_gain"] = out["bleu"] - out["baseline_bleu"]
        out["chrf_gain"] = out["chrf"] - out["baseline_chrf"]
        return out

    def scores(self, model: Seq2Seq, s: TatoebaSettings) -> dict:
        src_tok, tgt_tok = tokenizers_for(s.src_vocab, s.tgt_vocab)
        check_vocab(model, src_tok, tgt_tok)
        src, _, pairs = self.tensors(s, "test")
        refs = [zh for _, zh in pairs]
        beam = score(translate(model, src, tgt_tok, s.beam_size), refs)
        greedy = score(translate(model, src, tgt_tok, 1), refs)
        return {**beam, "bleu_greedy": greedy["bleu"], "chrf_greedy": greedy["chrf"], "test_sentences": len(refs)}

    def evaluate(self, model: Seq2Seq, s: TatoebaSettings) -> dict:
        return self.scores(model, s)

    def figures(self, model: Seq2Seq, s: TatoebaSettings, run) -> None:
        src_tok, tgt_tok = tokenizers_for(s.src_vocab, s.tgt_vocab)
        src, _, pairs = self.tensors(s, "test")
        by_length = sorted(range(len(pairs)), key=lambda i: (-len(pairs[i][0].split()), i))
        picks = by_length[:40:10]  # four of the longest test sentences, where alignment matters most
        (chunk,) = trim(src[picks])
        seqs, weights = model.eval().generate(chunk, 40, return_attention=True)
        with plt.rc_context(cjk_font()):
            self._heat_maps(picks, chunk, seqs, weights, pairs, src_tok, tgt_tok, run)

    @staticmethod
    def _heat_maps(picks, chunk, seqs, weights, pairs, src_tok, tgt_tok, run) -> None:
        fig, axes = plt.subplots(1, len(picks), figsize=(4.2 * len(picks), 4.6))
        for ax, b in zip(axes, range(len(picks)), strict=True):
            a = weights[b].numpy()  # (T_out + 1, S): the last row is where eos was produced
            src_pieces = [src_tok.id_to_token(int(t)) for t in chunk[b] if int(t) != PAD]
            out_pieces = [tgt_tok.id_to_token(t).lstrip("▁") or "▁" for t in seqs[b]] + ["</s>"]
            ax.imshow(a, cmap="Greys", vmin=0, vmax=1, aspect="auto")
            ax.set_xticks(range(len(src_pieces)), src_pieces, rotation=90, fontsize=8)
            ax.set_yticks(range(len(a)), out_pieces[: len(a)], fontsize=9)  # no eos row if it never stopped
            ax.set_title(pairs[picks[b]][1], fontsize=9)
        fig.suptitle("additive attention a_ij (rows: Chinese output, columns: English source; titles: reference)",
                     fontsize=10)
        fig.tight_layout()
        save(fig, run.path("alignment.png"))


def cjk_font() -> dict:
    """Matplotlib settings that put an installed font with Chinese glyphs first, if there is one."""
    from matplotlib import font_manager

    names = [f.name for f in font_manager.fontManager.ttflist]
    if not any("WenQuanYi" in n or "CJK" in n for n in names):  # installed after matplotlib cached its list
        for path in font_manager.findSystemFonts():
            if any(k in path.lower() for k in ("wqy", "cjk")):
                font_manager.fontManager.addfont(path)
        names = [f.name for f in font_manager.fontManager.ttflist]
    cjk = [n for n in names if any(k in n for k in ("CJK", "WenQuanYi", "Hei", "Song", "Ming", "Kai"))]
    return {"font.sans-serif": [cjk[0], *plt.rcParams["font.sans-serif"]]} if cjk else {}


def check_vocab(model: Seq2Seq, src_tok, tgt_tok) -> None:
    c = model.config
    if (c.src_vocab_size, c.tgt_vocab_size) != (src_tok.get_vocab_size(), tgt_tok.get_vocab_size()):
        raise ZupuError(f"the model's vocabularies ({c.src_vocab_size}, {c.tgt_vocab_size}) do not match the "
                        f"tokenizers ({src_tok.get_vocab_size()}, {tgt_tok.get_vocab_size()}); evaluate with the "
                        "settings the run was trained with")


RECIPES = [Tatoeba()]
