"""Character-level tokenizer: one id per distinct character (the char-RNN / nanoGPT-shakespeare-char scheme).

The vocabulary is the sorted set of characters of a training text, so it works the same for English
("a" .. "z", punctuation) and Chinese (each 汉字 is one token). A character outside the vocabulary
is an error naming it, unless the tokenizer was built with an `unk` token to map it to.

Saved as a Hugging Face `tokenizer.json` (a BPE model with no merges, no pre-tokenizer, a `Fuse`
decoder), so `tokenizers.Tokenizer.from_file` reads it and gives the same ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from zupu.atomic import write_json
from zupu.errors import ZupuError


class TokenizerError(ZupuError):
    """Text or ids a tokenizer cannot handle, or a tokenizer file it cannot read."""


class CharTokenizer:
    """`encode("hi") -> [id('h'), id('i')]`; ids follow the order of `chars`."""

    def __init__(self, chars: Sequence[str], unk: str | None = None):
        chars = list(chars)
        if unk is not None and unk not in chars:
            chars.append(unk)  # the unk token gets the last id
        bad = [c for c in chars if c != unk and len(c) != 1]
        if bad:
            raise TokenizerError(f"CharTokenizer: vocabulary entries must be single characters, got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            raise TokenizerError("CharTokenizer: vocabulary has repeated characters")
        self.chars: list[str] = chars
        self.unk = unk
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}
        self.unk_id = self.stoi[unk] if unk is not None else None

    @classmethod
    def from_text(cls, text: str | Iterable[str], unk: str | None = None) -> CharTokenizer:
        """Vocabulary = the sorted distinct characters of `text` (a string or an iterable of strings)."""
        seen: set[str] = set()
        for piece in [text] if isinstance(text, str) else text:
            seen.update(piece)
        if not seen:
            raise TokenizerError("CharTokenizer.from_text: the text is empty, so there is no vocabulary")
        return cls(sorted(seen - ({unk} if unk else set())), unk=unk)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            if self.unk_id is not None:
                return [stoi.get(c, self.unk_id) for c in text]
            c = next(c for c in text if c not in stoi)
            at = text.index(c)
            raise TokenizerError(
                f"character {c!r} (U+{ord(c):04X}) at position {at} is not in this tokenizer's "
                f"{self.vocab_size}-character vocabulary; build the tokenizer from text that contains it, "
                "or pass unk='<unk>' to map unknown characters to one token"
            ) from None

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        chars, n = self.chars, len(self.chars)
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise TokenizerError(f"token id {i} is outside this tokenizer's vocabulary of {n}")
            out.append(chars[i])
        return "".join(out)

    def to_hf_json(self) -> dict:
        """The Hugging Face `tokenizer.json` form of this tokenizer."""
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": None,
            "post_processor": None,
            "decoder": {"type": "Fuse"},
            "model": {
                "type": "BPE", "dropout": None, "unk_token": self.unk, "continuing_subword_prefix": None,
                "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                "vocab": dict(self.stoi), "merges": [],
            },
        }

    @classmethod
    def from_hf_json(cls, spec: dict) -> CharTokenizer:
        model = spec["model"]
        vocab: dict[str, int] = model["vocab"]
        chars = sorted(vocab, key=vocab.__getitem__)
        if [vocab[c] for c in chars] != list(range(len(chars))):
            raise TokenizerError("character tokenizer.json: ids are not 0..n-1")
        return cls(chars, unk=model.get("unk_token"))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `directory/tokenizer.json` atomically; returns its path."""
        path = Path(directory) / "tokenizer.json"
        write_json(path, self.to_hf_json())
        return path

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}{f', unk={self.unk!r}' if self.unk else ''})"
