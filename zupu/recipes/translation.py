"""Tatoeba English -> Chinese, shared by the translation recipes (seq2seq-attention, transformer).

Data: the 20,133 Tatoeba pairs, split deterministically by a CRC-32 of the English sentence (5% test,
2.5% validation, the rest training), so every translation of one English sentence lands on the same
side and no test sentence (English or Chinese) is seen in training. Tokenizers: a BPE for each side,
trained with Hugging Face `tokenizers` on the training split only (English split on whitespace and
punctuation; Chinese as one SentencePiece-style stream, so its pieces are characters and frequent
character runs). BLEU uses sacrebleu's `zh` tokenisation (each Chinese character a token); chrF is
sacrebleu's default. Any model with `config.src_vocab_size`/`tgt_vocab_size` and
`generate(src, max_new_tokens, beam_size=k)` returning token-id lists can be scored here.

This module is no member: it holds no `RECIPES`.
"""

from __future__ import annotations

import zlib
from functools import cache

import torch
from torch import nn

from zupu import data
from zupu.errors import ZupuError
from zupu.train.device import of

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]  # ids 0, 1, 2, 3 on both sides
PAD, BOS, EOS = 0, 1, 2


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


def tatoeba_tensors(split: str, src_vocab: int, tgt_vocab: int, max_src: int, max_tgt: int, limit: int = 0):
    """`encode_pairs` of one split with the training split's tokenizers; `limit` keeps the first N pairs."""
    src_tok, tgt_tok = tokenizers_for(src_vocab, tgt_vocab)
    pairs = tatoeba_splits()[split]
    if limit:
        pairs = pairs[:limit]
    return encode_pairs(pairs, src_tok, tgt_tok, max_src, max_tgt)


def pair_lengths(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Real tokens per padded pair: the key `TensorBatches(lengths=...)` groups batches by, so each batch's
    recurrent loop and logits run over little padding."""
    return (src != PAD).sum(1) + (tgt != PAD).sum(1)


def trim(*batch: torch.Tensor) -> list[torch.Tensor]:
    """Cut each padded (N, L) tensor to the longest row it holds (padding is on the right)."""
    return [t[:, : int((t != PAD).sum(1).max())] for t in batch]


def translate(model: nn.Module, src: torch.Tensor, tgt_tok, beam_size: int, batch_size: int = 256,
              max_new_tokens: int = 40) -> list[str]:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(src), batch_size):
            chunk = trim(src[i : i + batch_size])[0].to(of(model))
            out += [tgt_tok.decode(ids) for ids in model.generate(chunk, max_new_tokens, beam_size=beam_size)]
    return out


def score(hyps: list[str], refs: list[str]) -> dict[str, float]:
    import sacrebleu

    return {"bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score,
            "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score}


def tatoeba_translations(model: nn.Module, src_vocab: int, tgt_vocab: int, max_src: int, max_tgt: int,
                         beam_size: int, limit: int = 0) -> dict:
    """The test split translated with beam search (`beam`) and greedy (`greedy`), its references (`refs`)
    and each source sentence's length in BPE pieces (`src_lengths`)."""
    src_tok, tgt_tok = tokenizers_for(src_vocab, tgt_vocab)
    check_vocab(model, src_tok, tgt_tok)
    src, _, pairs = tatoeba_tensors("test", src_vocab, tgt_vocab, max_src, max_tgt, limit)
    return {"beam": translate(model, src, tgt_tok, beam_size), "greedy": translate(model, src, tgt_tok, 1),
            "refs": [zh for _, zh in pairs], "src_lengths": (src != PAD).sum(1).tolist()}


def scores_of(t: dict) -> dict:
    """BLEU and chrF of `tatoeba_translations`: beam (`bleu`, `chrf`) and greedy (`*_greedy`)."""
    beam, greedy = score(t["beam"], t["refs"]), score(t["greedy"], t["refs"])
    return {**beam, "bleu_greedy": greedy["bleu"], "chrf_greedy": greedy["chrf"], "test_sentences": len(t["refs"])}


def tatoeba_scores(model: nn.Module, src_vocab: int, tgt_vocab: int, max_src: int, max_tgt: int, beam_size: int,
                   limit: int = 0) -> dict:
    """BLEU and chrF on the test split with beam search (`bleu`, `chrf`) and greedy (`*_greedy`)."""
    return scores_of(tatoeba_translations(model, src_vocab, tgt_vocab, max_src, max_tgt, beam_size, limit))


def paired_comparison(baseline: list[str], system: list[str], refs: list[str], src_lengths: list[int],
                      trials: int = 1000) -> dict:
    """Does `system` beat `baseline` on BLEU beyond chance, and where?

    `bleu_gain_p`: sacrebleu's paired approximate randomisation test (Riezler and Maxwell, 2005): the
    share of `trials` random swaps of the two systems' outputs, sentence by sentence, whose BLEU
    difference is at least the real one; 1.0 when the system does not lead at all. `bleu_gain_short` /
    `_long`: the gain on the third of the sentences with the shortest / longest sources (Bahdanau et
    al.'s figure 2: a fixed-length summary degrades on long sentences, attention should not).
    """
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    bleu = BLEU(tokenize="zh")
    _, results = PairedTest([("baseline", baseline), ("system", system)], {"BLEU": bleu}, [refs],
                            test_type="ar", n_samples=trials)()
    base, ours = results["BLEU"]
    out = {"bleu_gain_p": float(ours.p_value) if ours.score > base.score else 1.0}
    order = sorted(range(len(refs)), key=lambda i: (src_lengths[i], i))
    third = len(order) // 3
    for name, idx in (("short", order[:third]), ("long", order[len(order) - third:])):
        pick = [refs[i] for i in idx]
        out[f"bleu_gain_{name}"] = (bleu.corpus_score([system[i] for i in idx], [pick]).score
                                    - bleu.corpus_score([baseline[i] for i in idx], [pick]).score)
    return out


def check_vocab(model: nn.Module, src_tok, tgt_tok) -> None:
    c = model.config
    if (c.src_vocab_size, c.tgt_vocab_size) != (src_tok.get_vocab_size(), tgt_tok.get_vocab_size()):
        raise ZupuError(f"the model's vocabularies ({c.src_vocab_size}, {c.tgt_vocab_size}) do not match the "
                        f"tokenizers ({src_tok.get_vocab_size()}, {tgt_tok.get_vocab_size()}); evaluate with the "
                        "settings the run was trained with")
