"""WordPiece, BERT's tokenizer: normalise, split into words, then greedy longest-match subwords.

Schuster & Nakajima, "Japanese and Korean Voice Search" (2012) introduced WordPiece; Wu et al.,
"Google's Neural Machine Translation System" (2016, https://arxiv.org/abs/1609.08144) and Devlin et
al., "BERT" (2018, https://arxiv.org/abs/1810.04805) made it the BERT vocabulary.

BERT "uncased" basic tokenisation, in order:
1. Clean: drop NUL, U+FFFD and control/format characters; every whitespace character becomes a space.
2. CJK: put spaces around each CJK ideograph, so each 汉字 is its own word.
3. Strip accents (NFD, drop combining marks) and lowercase.
4. Split on whitespace, and make every punctuation character a word of its own.
WordPiece then cuts each word left to right into the longest vocabulary entry that fits, the
pieces after the first spelt with a "##" prefix ("unaffable" -> "un", "##aff", "##able"); a word
with no such cut, or longer than `max_input_chars_per_word`, becomes [UNK]. A model input is
[CLS] A [SEP] (B [SEP]), with token_type_ids 0 for A's part and 1 for B's.

Training picks merges by WordPiece's likelihood score, count(ab) / (count(a) * count(b)): the pair
whose joint count most exceeds what its parts' counts would predict, not just the most frequent.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import regex

from zupu.atomic import atomic_open, write_json
from zupu.progress import progress
from zupu.tokenizers.char import TokenizerError

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Unicode White_Space (what HF `tokenizers` splits on); \t \n \r count as whitespace, not control
_WHITESPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
               "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_TO_SPACE = str.maketrans(dict.fromkeys(_WHITESPACE, " "))
# dropped by cleaning: NUL, U+FFFD, and control, format, private-use and surrogate characters other
# than \t \n \r (as HF `tokenizers` does; Google's BERT also dropped unassigned code points)
_JUNK = regex.compile(r"[\x00\ufffd]|[\p{Cf}\p{Co}\p{Cs}]|[^\P{Cc}\t\n\r]")
# the CJK Unified Ideographs blocks BERT treats as one-character words (not kana or hangul)
_CJK = regex.compile("([\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f"
                     "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f])")
# BERT counts every non-alphanumeric ASCII symbol ($, ^, `) as punctuation, plus Unicode's P* classes
_PUNCT = r"!-/:-@\[-`{-~\p{P}"
_WORDS = regex.compile(f"[^{regex.escape(_WHITESPACE)}{_PUNCT}]+|[{_PUNCT}]")


class WordPiece:
    """A WordPiece tokenizer with BERT's basic tokenisation in front and [CLS]/[SEP] behind."""

    def __init__(self, vocab: Sequence[str] | dict[str, int], lowercase: bool = True,
                 strip_accents: bool | None = None, handle_chinese_chars: bool = True, clean_text: bool = True,
                 unk_token: str = "[UNK]", cls_token: str = "[CLS]", sep_token: str = "[SEP]",
                 pad_token: str = "[PAD]", mask_token: str = "[MASK]", prefix: str = "##",
                 max_input_chars_per_word: int = 100, add_cls_sep: bool = True):
        self.vocab: dict[str, int] = dict(vocab) if isinstance(vocab, dict) else {t: i for i, t in enumerate(vocab)}
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.lowercase, self.clean_text, self.handle_chinese_chars = lowercase, clean_text, handle_chinese_chars
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.prefix, self.max_input_chars_per_word = prefix, max_input_chars_per_word
        self.add_cls_sep = add_cls_sep  # False for a tokenizer.json without a post-processor
        self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
        self.pad_token, self.mask_token = pad_token, mask_token
        missing = [t for t in (unk_token, cls_token, sep_token, pad_token) if t not in self.vocab]
        if missing:
            raise TokenizerError(f"WordPiece vocabulary lacks the special tokens {missing}")
        self.special_tokens = {t: self.vocab[t] for t in (pad_token, unk_token, cls_token, sep_token, mask_token)
                               if t in self.vocab}
        self.unk_id, self.cls_id, self.sep_id = self.vocab[unk_token], self.vocab[cls_token], self.vocab[sep_token]
        self.pad_id = self.vocab[pad_token]
        self._specials = regex.compile("|".join(regex.escape(t) for t in sorted(self.special_tokens, key=len,
                                                                                 reverse=True)))
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # --- basic tokenisation ------------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """Steps 1-3: clean, space out CJK, strip accents, lowercase."""
        if self.clean_text:
            text = _JUNK.sub("", text).translate(_TO_SPACE)
        if self.handle_chinese_chars:
            text = _CJK.sub(r" \1 ", text)
        if self.strip_accents and not text.isascii():
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if self.lowercase:
            text = text.lower()
        return text

    @staticmethod
    def pre_tokenize(text: str) -> list[str]:
        """Step 4: whitespace-separated words, each punctuation character a word of its own."""
        return _WORDS.findall(text)

    def _word_ids(self, word: str) -> list[int]:
        """Greedy longest-match-first subwords of one word, or [UNK] for the whole word."""
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_id]
        ids, start, vocab = [], 0, self.vocab
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in vocab:
                    ids.append(vocab[piece])
                    start = end
                    break
            else:
                return [self.unk_id]
        return ids

    def tokenize_ids(self, text: str) -> list[int]:
        """Ids of `text` without [CLS]/[SEP]; special tokens written in the text keep their ids."""
        out: list[int] = []
        start = 0
        for m in [*self._specials.finditer(text), None]:
            piece = text[start:m.start()] if m else text[start:]
            for word in self.pre_tokenize(self.normalize(piece)):
                ids = self._cache.get(word)
                if ids is None:
                    ids = self._word_ids(word)
                    if len(self._cache) < 500_000:
                        self._cache[word] = ids
                out.extend(ids)
            if m:
                out.append(self.special_tokens[m.group()])
                start = m.end()
        return out

    # --- model inputs ------------------------------------------------------------------------------

    def encode(self, text: str, pair: str | None = None, special: bool = True) -> list[int]:
        """[CLS] text [SEP] (pair [SEP]) ids; `special=False` leaves [CLS]/[SEP] out."""
        a = self.tokenize_ids(text)
        b = self.tokenize_ids(pair) if pair is not None else None
        if not special:
            return a + (b or [])
        return self._with_specials(a, b)[0]

    def _with_specials(self, a: list[int], b: list[int] | None) -> tuple[list[int], list[int]]:
        if not self.add_cls_sep:
            return a + (b or []), [0] * len(a) + [1] * len(b or [])
        ids = [self.cls_id, *a, self.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_id]
            types += [1] * (len(b) + 1)
        return ids, types

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def __call__(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None,
                 max_length: int | None = None) -> dict[str, Any]:
        """Padded model inputs for a batch: `input_ids`, `token_type_ids`, `attention_mask` (LongTensors, (B, T)).

        With `max_length`, a text (or pair) is cut to fit by dropping tokens from the end of the
        longer of the two, as BERT does.
        """
        import torch

        texts = [texts] if isinstance(texts, str) else list(texts)
        pairs = [pairs] if isinstance(pairs, str) else pairs
        if pairs is not None and len(pairs) != len(texts):
            raise TokenizerError(f"{len(texts)} texts but {len(pairs)} pairs; give one pair per text")
        rows = []
        for k, text in enumerate(texts):
            a = self.tokenize_ids(text)
            b = self.tokenize_ids(pairs[k]) if pairs is not None else None
            if max_length is not None:
                a, b = self._truncate(a, b, max_length)
            rows.append(self._with_specials(a, b))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, types) in enumerate(rows):
            input_ids[r, :len(ids)] = torch.tensor(ids)
            token_type_ids[r, :len(ids)] = torch.tensor(types)
            attention_mask[r, :len(ids)] = 1
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}

    def _truncate(self, a: list[int], b: list[int] | None, max_length: int) -> tuple[list[int], list[int] | None]:
        budget = max_length - ((2 if b is None else 3) if self.add_cls_sep else 0)  # room after [CLS] and [SEP]s
        if budget < (1 if b is None else 2):
            raise TokenizerError(f"max_length {max_length} leaves no room for text after [CLS] and [SEP]")
        if b is None:
            return a[:budget], None
        n_a, n_b = len(a), len(b)
        while n_a + n_b > budget:  # drop from the longer; on a tie, from the second
            if n_a > n_b:
                n_a -= 1
            else:
                n_b -= 1
        return a[:n_a], b[:n_b]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of `ids`: "##" pieces glued to the piece before, others joined by spaces, BERT's
        space clean-up around punctuation. Lowercasing and accent stripping are not undone."""
        out = []
        for i in ids:
            token = self.id_to_token.get(int(i))
            if token is None:
                raise TokenizerError(f"token id {int(i)} is not in this tokenizer's vocabulary of {self.vocab_size}")
            if skip_special and token in self.special_tokens:
                continue
            if out:
                token = token[len(self.prefix):] if token.startswith(self.prefix) else " " + token
            for dirty, clean in _CLEANUP:
                token = token.replace(dirty, clean)
            out.append(token)
        return "".join(out)

    # --- training ----------------------------------------------------------------------------------

    @classmethod
    def train(cls, text: str | Iterable[str], vocab_size: int, lowercase: bool = True,
              min_frequency: int = 2, special_tokens: Sequence[str] = SPECIALS, **kwargs: Any) -> WordPiece:
        """Learn a vocabulary of `vocab_size` tokens from `text` by WordPiece's likelihood score.

        Starts from every character seen (word-initial ones bare, the rest "##"-prefixed), then
        repeatedly merges the adjacent pair with the highest count(ab) / (count(a) * count(b))
        among pairs seen at least `min_frequency` times. Ties go to the lexically smallest pair.
        """
        proto = cls(list(special_tokens), lowercase=lowercase, **kwargs)
        prefix = proto.prefix
        word_counts: Counter[str] = Counter()
        for piece in [text] if isinstance(text, str) else text:
            word_counts.update(proto.pre_tokenize(proto.normalize(piece)))
        words = [[w[0], *(prefix + c for c in w[1:])] for w in word_counts]
        freqs = list(word_counts.values())
        vocab = list(special_tokens) + sorted({t for w in words for t in w} - set(special_tokens))
        if len(vocab) > vocab_size:
            raise TokenizerError(f"vocab_size {vocab_size} is smaller than the {len(vocab)} characters and special "
                                 "tokens the text needs; raise it or train on less varied text")

        token_counts: Counter[str] = Counter()
        pair_counts: Counter[tuple[str, str]] = Counter()
        where: dict[tuple[str, str], set[int]] = {}  # pair -> indices of the words that contain it

        def count(k: int, sign: int) -> None:  # add (or take away) word k's tokens and pairs
            word, f = words[k], sign * freqs[k]
            for t in word:
                token_counts[t] += f
            for p in pairwise(word):
                pair_counts[p] += f
                if sign > 0:
                    where.setdefault(p, set()).add(k)

        for k in range(len(words)):
            count(k, +1)
        bar = progress(total=vocab_size - len(vocab), desc="WordPiece merges", unit="merge")
        known = set(vocab)
        while len(vocab) < vocab_size:
            candidates = [p for p, c in pair_counts.items() if c >= min_frequency]
            if not candidates:
                break
            a, b = min(candidates, key=lambda p: (-pair_counts[p] / (token_counts[p[0]] * token_counts[p[1]]), p))
            new = a + b[len(prefix):]
            for k in where.pop((a, b)):
                count(k, -1)
                words[k] = _merge(words[k], a, b, new)
                count(k, +1)
            for p in [p for p, c in pair_counts.items() if c <= 0]:
                del pair_counts[p]
            if new not in known:
                known.add(new)
                vocab.append(new)
            bar.update()
        bar.close()
        return cls(vocab, lowercase=lowercase, **kwargs)

    # --- files -------------------------------------------------------------------------------------

    @classmethod
    def from_vocab_txt(cls, path: str | os.PathLike, **kwargs: Any) -> WordPiece:
        """BERT's `vocab.txt`: one token a line, the line number its id."""
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls(lines, **kwargs)

    def save_vocab_txt(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / "vocab.txt"
        with atomic_open(path, "w") as f:
            f.writelines(t + "\n" for t, _ in sorted(self.vocab.items(), key=lambda kv: kv[1]))
        return path

    def to_hf_json(self) -> dict:
        """The Hugging Face `tokenizer.json` form (the layout of BERT's own)."""
        cls_, sep = self.cls_token, self.sep_token
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True}
                             for t, i in sorted(self.special_tokens.items(), key=lambda kv: kv[1])],
            "normalizer": {"type": "BertNormalizer", "clean_text": self.clean_text,
                           "handle_chinese_chars": self.handle_chinese_chars, "strip_accents": self.strip_accents,
                           "lowercase": self.lowercase},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": None if not self.add_cls_sep else {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": cls_, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": sep, "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": cls_, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": sep, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                         {"SpecialToken": {"id": sep, "type_id": 1}}],
                "special_tokens": {t: {"id": t, "ids": [self.vocab[t]], "tokens": [t]} for t in (cls_, sep)},
            },
            "decoder": {"type": "WordPiece", "prefix": self.prefix, "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": self.unk_token, "continuing_subword_prefix": self.prefix,
                      "max_input_chars_per_word": self.max_input_chars_per_word, "vocab": dict(self.vocab)},
        }

    @classmethod
    def from_hf_json(cls, spec: dict, source: str = "tokenizer.json") -> WordPiece:
        model, norm = spec["model"], spec.get("normalizer") or {}
        if norm and norm.get("type") != "BertNormalizer":
            raise TokenizerError(f"{source}: WordPiece with a {norm.get('type')!r} normalizer is not supported")
        post = spec.get("post_processor") or {}
        kwargs: dict[str, Any] = {"add_cls_sep": bool(post)}
        if post.get("type") == "BertProcessing":
            kwargs["sep_token"], kwargs["cls_token"] = post["sep"][0], post["cls"][0]
        elif post.get("type") == "TemplateProcessing":
            single = [next(iter(piece.values()))["id"] for piece in post["single"]]
            if len(single) != 3 or single[1] != "A":
                raise TokenizerError(f"{source}: only the BERT template [CLS] A [SEP] is supported, not {single}")
            kwargs["cls_token"], kwargs["sep_token"] = single[0], single[2]
        return cls(model["vocab"], lowercase=norm.get("lowercase", False), strip_accents=norm.get("strip_accents"),
                   handle_chinese_chars=norm.get("handle_chinese_chars", False),
                   clean_text=norm.get("clean_text", False), unk_token=model["unk_token"],
                   prefix=model.get("continuing_subword_prefix", "##"),
                   max_input_chars_per_word=model.get("max_input_chars_per_word", 100), **kwargs)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> WordPiece:
        """A BERT directory with `vocab.txt` (and `tokenizer_config.json` saying whether to lowercase)."""
        directory = Path(directory)
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        return cls.from_vocab_txt(directory / "vocab.txt", lowercase=config.get("do_lower_case", True),
                                  strip_accents=config.get("strip_accents"),
                                  handle_chinese_chars=config.get("tokenize_chinese_chars", True))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `directory/tokenizer.json` (and BERT's `vocab.txt`) atomically; returns tokenizer.json's path."""
        path = Path(directory) / "tokenizer.json"
        write_json(path, self.to_hf_json())
        self.save_vocab_txt(directory)
        return path

    def __repr__(self) -> str:
        return f"WordPiece(vocab_size={self.vocab_size}, lowercase={self.lowercase})"


# the decoder's clean-up of spaces tokenisation put before punctuation and contractions
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _merge(word: list[str], a: str, b: str, new: str) -> list[str]:
    out, i = [], 0
    while i < len(word):
        if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out
