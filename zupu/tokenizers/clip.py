"""CLIP's tokenizer: byte-level BPE over lower-cased words, each word's last symbol marked with "</w>".

Radford et al. 2021, section 2.4: "a lower-cased byte pair encoding (BPE) representation of the text with a
49,152 vocab size ... the text sequence is bracketed with [SOS] and [EOS] tokens". The merges are OpenAI's
`bpe_simple_vocab_16e6.txt.gz` (the registered `clip-bpe` dataset); ids equal transformers' CLIPTokenizer:

1. Special tokens written in the text (<|startoftext|>, <|endoftext|>) are cut out first and keep their ids.
2. Normalise: Unicode NFC, every run of whitespace -> one space, lower-case. (OpenAI's code also runs ftfy
   and HTML unescaping; transformers' tokenizer does not, and neither does this one.)
3. Pre-tokenise into words: contractions ('s 't 're 've 'm 'll 'd), runs of letters, single digits, runs of
   other symbols; whitespace separates and is dropped (unlike GPT-2's, a word carries no leading space).
4. Each word becomes its UTF-8 bytes as symbols (GPT-2's byte map), the last one with "</w>" appended, so
   "cat" at a word's end and "cat" inside "category" are different tokens.
5. Merge the adjacent pair learned earliest until none is left (`zupu.tokenizers.bpe.apply_merges`).
6. A caption is <|startoftext|> ids <|endoftext|>, padded with <|endoftext|> to the context (77).

The vocabulary is built from the merges as OpenAI's code does: the 256 byte symbols (printable ones first,
i.e. in code-point order of their mapped characters), the same with "</w>", one token per merge, then the two
special tokens: 256 + 256 + 48,894 + 2 = 49,408.
"""

from __future__ import annotations

import gzip
import json
import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import regex

from zupu.atomic import write_bytes, write_json
from zupu.tokenizers.bpe import apply_merges, bytes_to_unicode, unicode_to_bytes
from zupu.tokenizers.char import TokenizerError

BOS, EOS, END_OF_WORD = "<|startoftext|>", "<|endoftext|>", "</w>"
N_MERGES = 49152 - 256 - 2  # the merges OpenAI's vocabulary takes from the file
CONTEXT = 77
# transformers' pre-tokeniser (which keeps only the matches). Its special tokens match only case-changed forms
# (exact ones were cut out before normalising), and its byte-level step then splits such a word again with
# GPT-2's pattern: "<|", "endoftext", "|>" (`_words`)
WORDS = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"""
                      r"""|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")
_SPACES = regex.compile(r"\s+")
_SPECIALS = regex.compile(f"{regex.escape(BOS)}|{regex.escape(EOS)}")


class CLIPTokenizer:
    """`encode(text)` -> [<|startoftext|>, ..., <|endoftext|>]; `tok(texts)` -> padded `input_ids` and
    `attention_mask` tensors (B, context); `decode(ids)` -> text (lower-cased, one space between words)."""

    def __init__(self, merges: Sequence[tuple[str, str]]):
        self.merges = [tuple(m) for m in merges]
        symbols = sorted(bytes_to_unicode().values())  # OpenAI's order: printable bytes first
        tokens = [*symbols, *(s + END_OF_WORD for s in symbols), *("".join(m) for m in self.merges), BOS, EOS]
        self.vocab = {t: i for i, t in enumerate(tokens)}
        if len(self.vocab) != len(tokens):
            raise TokenizerError("the CLIP merges make the same token twice; is this a CLIP merges file?")
        self.bos_id, self.eos_id = self.vocab[BOS], self.vocab[EOS]
        self.pad_id = self.eos_id  # as transformers pads
        self.special_tokens = {BOS: self.bos_id, EOS: self.eos_id}
        byte_char = bytes_to_unicode()
        self.byte_id = [self.vocab[byte_char[b]] for b in range(256)]
        self.end_id = [self.vocab[byte_char[b] + END_OF_WORD] for b in range(256)]  # a word's last byte
        self.ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            if a not in self.vocab or b not in self.vocab:
                raise TokenizerError(f"merge #{rank} ({a!r}, {b!r}) uses a token that no earlier merge made")
            self.ranks.setdefault((self.vocab[a], self.vocab[b]), (rank, self.vocab[a + b]))
        self.id_token = {i: t for t, i in self.vocab.items()}
        self._cache: dict[str, list[int]] = {}

    # --- construction ------------------------------------------------------------------------------

    @classmethod
    def from_bpe_file(cls, path: str | os.PathLike) -> CLIPTokenizer:
        """OpenAI's `bpe_simple_vocab_16e6.txt.gz` (or its unzipped text): a version line, then merges."""
        path = Path(path)
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            lines = raw.decode("utf-8").split("\n")
        except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
            raise TokenizerError(f"{path}: not a readable CLIP merges file ({type(e).__name__}: {e})") from None
        merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
        if len(merges) < N_MERGES or any(len(m) != 2 for m in merges):
            raise TokenizerError(f"{path}: expected {N_MERGES:,} merges of two tokens each after the version "
                                 "line; the file is truncated or not CLIP's")
        return cls(merges)

    @classmethod
    def openai(cls) -> CLIPTokenizer:
        """The real CLIP tokenizer (49,408 tokens), from the registered `clip-bpe` dataset."""
        from zupu.data import fetch

        return cls.from_bpe_file(fetch("clip-bpe")["bpe_simple_vocab_16e6.txt.gz"])

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> CLIPTokenizer:
        """A folder holding transformers' CLIP files (`vocab.json` + `merges.txt`, as `save` writes them)."""
        directory = Path(directory)
        try:
            lines = (directory / "merges.txt").read_text(encoding="utf-8").split("\n")
            vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"{directory}: no readable CLIP vocab.json + merges.txt ({e})") from None
        tok = cls([tuple(line.split()) for line in lines if line and not line.startswith("#version")])
        if vocab != tok.vocab:
            raise TokenizerError(f"{directory}/vocab.json is not the vocabulary its merges.txt makes in CLIP's "
                                 "order; zupu reads CLIP tokenizers built from merges alone")
        return tok

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `vocab.json` and `merges.txt` as transformers' CLIPTokenizer reads them; returns the folder."""
        directory = Path(directory)
        write_json(directory / "vocab.json", self.vocab)
        merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges)
        write_bytes(directory / "merges.txt", merges.encode("utf-8"))
        return directory

    # --- encode / decode ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @staticmethod
    def normalize(text: str) -> str:
        # lower-cased one character at a time, as transformers does: str.lower() alone would give a word-final
        # capital sigma the final form (ς), which transformers does not
        return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).replace("Σ", "σ").lower()

    def _word_ids(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            data = word.encode("utf-8")
            ids = apply_merges([*(self.byte_id[b] for b in data[:-1]), self.end_id[data[-1]]], self.ranks)
            if len(self._cache) < 500_000:
                self._cache[word] = ids
        return ids

    def tokenize_ids(self, text: str) -> list[int]:
        """Ids of `text` without the start and end tokens; special tokens written in the text keep their ids."""
        out: list[int] = []
        start = 0
        try:
            for m in [*_SPECIALS.finditer(text), None]:
                for word in _words(self.normalize(text[start:m.start()] if m else text[start:])):
                    out.extend(self._word_ids(word))
                if m:
                    out.append(self.special_tokens[m.group()])
                    start = m.end()
        except UnicodeEncodeError as e:
            raise TokenizerError(f"text has {e.object[e.start:e.end]!r}, a lone surrogate that is not valid "
                                 "Unicode text and has no UTF-8 bytes to encode") from None
        return out

    def encode(self, text: str, special: bool = True) -> list[int]:
        """<|startoftext|> text <|endoftext|> ids; `special=False` leaves the two out."""
        ids = self.tokenize_ids(text)
        return [self.bos_id, *ids, self.eos_id] if special else ids

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def __call__(self, texts: str | Sequence[str], context_length: int = CONTEXT, truncation: bool = False,
                 padding: str = "max_length") -> dict[str, Any]:
        """Model inputs for a batch: `input_ids` and `attention_mask` (LongTensors, (B, T)), T = `context_length`
        (`padding="max_length"`, as CLIP was trained) or the longest caption (`padding="longest"`).

        A caption longer than the context is an error unless `truncation=True`, which keeps its first
        context_length - 2 tokens and still ends it with <|endoftext|> (the token the text encoder pools at)."""
        import torch

        if padding not in ("max_length", "longest"):
            raise TokenizerError(f"padding={padding!r}: choose 'max_length' or 'longest'")
        if context_length < 3:
            raise TokenizerError(f"context_length {context_length} leaves no room for text between "
                                 "<|startoftext|> and <|endoftext|>")
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for k, text in enumerate(texts):
            ids = self.tokenize_ids(text)
            if len(ids) + 2 > context_length:
                if not truncation:
                    raise TokenizerError(f"text {k} ({text[:40]!r}...) is {len(ids) + 2} tokens, longer than the "
                                         f"context of {context_length}; shorten it or pass truncation=True")
                ids = ids[:context_length - 2]
            rows.append([self.bos_id, *ids, self.eos_id])
        width = context_length if padding == "max_length" else max((len(r) for r in rows), default=0)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, ids in enumerate(rows):
            input_ids[r, :len(ids)] = torch.tensor(ids)
            attention_mask[r, :len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of `ids`: each "</w>" becomes a space, as transformers decodes (lower-casing is not undone)."""
        parts = []
        for i in ids:
            token = self.id_token.get(int(i))
            if token is None:
                raise TokenizerError(f"token id {int(i)} is not in this tokenizer's vocabulary of {self.vocab_size}")
            if token in self.special_tokens:
                if not skip_special:
                    parts.append(token.encode("utf-8"))
                continue
            parts.append(unicode_to_bytes(token.removesuffix(END_OF_WORD)) + (b" " if token.endswith(END_OF_WORD)
                                                                                   else b""))
        return b"".join(parts).decode("utf-8", errors="replace").strip()

    def __repr__(self) -> str:
        return f"CLIPTokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"


def _words(text: str) -> Iterable[str]:
    """Step 3 on normalised text."""
    for word in WORDS.findall(text):
        if word in (BOS, EOS):
            yield from ("<|", word[2:-2], "|>")
        else:
            yield word
