"""Byte-level byte-pair encoding, the tokenizer of GPT-2 (and GPT-3, RoBERTa, ...).

Sennrich, Haddow & Birch, "Neural Machine Translation of Rare Words with Subword Units" (2016),
https://arxiv.org/abs/1508.07909; byte-level as in Radford et al., "Language Models are
Unsupervised Multitask Learners" (GPT-2, 2019).

The rules, in the order encoding applies them:
1. Pre-tokenise: a regex cuts text into words (`'s`, ` the`, ` 42`, `!!`, runs of spaces); merges
   never cross a word boundary, so " dog." never becomes one token.
2. Bytes: each word becomes its UTF-8 bytes, one starting token per byte (256 of them), so any
   Unicode text is encodable and nothing is ever "unknown".
3. Merge: the training run learned an ordered list of merges (a, b) -> ab. Repeatedly take the
   adjacent pair in the word with the lowest rank (the earliest learned) and merge every
   occurrence of it; stop when no adjacent pair has a rank.
Training learns that list: count every adjacent pair over the corpus's words (weighted by how
often each word occurs), merge the most frequent pair everywhere, repeat.

Files store tokens as strings through GPT-2's byte<->unicode map, which sends each byte to a
printable character (space -> "Ġ", newline -> "Ċ") so vocab files stay readable text.
"""

from __future__ import annotations

import heapq
import json
import os
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import regex

from zupu.atomic import write_json
from zupu.progress import progress
from zupu.tokenizers.char import TokenizerError

# GPT-2's pre-tokeniser: contractions, optional space + letters, optional space + numbers,
# optional space + other symbols, whitespace not followed by non-space (so " x" keeps its space),
# and any remaining whitespace.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 byte values to printable characters.

    Bytes that are already printable, non-space Latin-1 characters map to themselves; the other
    68 (controls, space, 0x7F-0xA0, soft hyphen) map to U+0100, U+0101, ... in byte order.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def _unicode_byte() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def unicode_to_bytes(token: str) -> bytes:
    """Undo `bytes_to_unicode` for one token string."""
    decoder = _unicode_byte()
    try:
        return bytes(decoder[c] for c in token)
    except KeyError as e:
        raise TokenizerError(f"token {token!r} has character {e.args[0]!r}, which is not in GPT-2's byte map") from None


class ByteBPE:
    """A byte-level BPE tokenizer: `vocab` (token string -> id), ordered `merges`, special tokens."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]],
                 special_tokens: dict[str, int] | None = None, pattern: str = GPT2_PATTERN):
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        self.special_tokens = dict(special_tokens or {})
        self.pattern = pattern
        self._words = regex.compile(pattern)
        byte_char = bytes_to_unicode()
        missing = [byte_char[b] for b in range(256) if byte_char[b] not in self.vocab]
        if missing:
            raise TokenizerError(f"byte-level BPE vocabulary lacks {len(missing)} of the 256 byte tokens "
                                 f"(e.g. {missing[0]!r}); it cannot encode every text")
        self.byte_id = [self.vocab[byte_char[b]] for b in range(256)]
        # (id of a, id of b) -> (rank, id of ab): the merge table in the form the encode loop wants
        self.ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            for t in (a, b, a + b):
                if t not in self.vocab:
                    raise TokenizerError(f"merge #{rank} ({a!r}, {b!r}) uses token {t!r}, "
                                         "which is not in the vocabulary")
            self.ranks.setdefault((self.vocab[a], self.vocab[b]), (rank, self.vocab[a + b]))
        self.id_bytes: dict[int, bytes] = {i: unicode_to_bytes(t) for t, i in self.vocab.items()
                                           if t not in self.special_tokens}
        for t, i in self.special_tokens.items():
            self.id_bytes[i] = t.encode("utf-8")
        self._specials = (regex.compile("|".join(regex.escape(t) for t in sorted(self.special_tokens, key=len,
                                                                                   reverse=True)))
                          if self.special_tokens else None)
        self._cache: dict[str, list[int]] = {}

    # --- construction ------------------------------------------------------------------------------

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | os.PathLike, vocab_bpe: str | os.PathLike) -> ByteBPE:
        """GPT-2's own `encoder.json` + `vocab.bpe` (or HF's identical `vocab.json` + `merges.txt`)."""
        vocab = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
        lines = Path(vocab_bpe).read_text(encoding="utf-8").split("\n")
        merges = []
        for n, line in enumerate(lines, 1):
            if not line or line.startswith("#version"):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise TokenizerError(f"{vocab_bpe}:{n}: a merge line must be two tokens separated by a space")
            merges.append((parts[0], parts[1]))
        specials = {t: i for t, i in vocab.items() if t == ENDOFTEXT}
        return cls(vocab, merges, specials)

    @classmethod
    def gpt2(cls) -> ByteBPE:
        """The real GPT-2 tokenizer (50,257 tokens), from the registered `gpt2-tokenizer` dataset."""
        from zupu.data import fetch

        paths = fetch("gpt2-tokenizer")
        return cls.from_gpt2_files(paths["encoder.json"], paths["vocab.bpe"])

    @classmethod
    def train(cls, text: str | Iterable[str], vocab_size: int, special_tokens: Iterable[str] = (ENDOFTEXT,),
              min_frequency: int = 2, pattern: str = GPT2_PATTERN) -> ByteBPE:
        """Learn merges from `text` until the vocabulary (256 bytes + merges + specials) has `vocab_size` tokens.

        Stops early when no pair occurs `min_frequency` times. Ties between equally frequent pairs
        go to the pair of lower ids, so training is deterministic.
        """
        special_tokens = list(dict.fromkeys(special_tokens))
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise TokenizerError(f"vocab_size {vocab_size} is smaller than the 256 byte tokens "
                                 f"+ {len(special_tokens)} special tokens it must hold")
        splitter = regex.compile(pattern)
        word_counts: Counter[str] = Counter()
        for piece in [text] if isinstance(text, str) else text:
            word_counts.update(splitter.findall(piece))
        words = [list(w.encode("utf-8")) for w in word_counts]  # distinct words as token ids (bytes 0..255)
        freqs = list(word_counts.values())

        pair_counts: Counter[tuple[int, int]] = Counter()
        where: dict[tuple[int, int], set[int]] = {}  # pair -> indices of words that contain it
        for w, (word, f) in enumerate(zip(words, freqs, strict=True)):
            for pair in pairwise(word):
                pair_counts[pair] += f
                where.setdefault(pair, set()).add(w)
        heap = [(-c, p) for p, c in pair_counts.items()]  # max-heap by count; stale entries skipped on pop
        heapq.heapify(heap)

        token_bytes = [bytes([b]) for b in range(256)]
        merges: list[tuple[int, int]] = []
        bar = progress(total=n_merges, desc="BPE merges", unit="merge")
        while len(merges) < n_merges and heap:
            neg, pair = heapq.heappop(heap)
            if -neg != pair_counts.get(pair, 0):
                continue  # stale: this pair's count changed since the entry was pushed
            if -neg < min_frequency:
                break
            new = 256 + len(merges)
            merges.append(pair)
            token_bytes.append(token_bytes[pair[0]] + token_bytes[pair[1]])
            changed: set[tuple[int, int]] = set()
            for w in where.pop(pair):
                word, f = words[w], freqs[w]
                merged = _merge(word, pair, new)
                for p in pairwise(word):
                    pair_counts[p] -= f
                    changed.add(p)
                for p in pairwise(merged):
                    pair_counts[p] += f
                    changed.add(p)
                    where.setdefault(p, set()).add(w)
                words[w] = merged
            for p in changed:
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
                else:
                    del pair_counts[p]
                    where.pop(p, None)
            bar.update()
        bar.close()

        byte_char = bytes_to_unicode()
        spell = [''.join(byte_char[b] for b in t) for t in token_bytes]
        vocab = {s: i for i, s in enumerate(spell)}
        specials = {t: len(spell) + k for k, t in enumerate(special_tokens)}
        vocab.update(specials)
        return cls(vocab, [(spell[a], spell[b]) for a, b in merges], specials, pattern)

    # --- encode / decode ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _encode_word(self, word: str) -> list[int]:
        return apply_merges([self.byte_id[b] for b in word.encode("utf-8")], self.ranks)

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        cache = self._cache
        for word in self._words.findall(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._encode_word(word)
                if len(cache) < 500_000:
                    cache[word] = ids
            out.extend(ids)

    def encode(self, text: str, special: bool = True) -> list[int]:
        """Token ids of `text`. With `special=True` a special token written in the text (e.g.
        "<|endoftext|>") becomes its one id; with `special=False` it is encoded as ordinary text."""
        out: list[int] = []
        try:
            if not special or self._specials is None:
                self._encode_ordinary(text, out)
                return out
            start = 0
            for m in self._specials.finditer(text):
                self._encode_ordinary(text[start:m.start()], out)
                out.append(self.special_tokens[m.group()])
                start = m.end()
            self._encode_ordinary(text[start:], out)
        except UnicodeEncodeError as e:
            bad = e.object[e.start:e.end]
            raise TokenizerError(f"text has {bad!r} at position {text.index(bad)}, a lone surrogate that is not "
                                 "valid Unicode text and has no UTF-8 bytes to encode") from None
        return out

    def encode_batch(self, texts: Iterable[str], special: bool = True) -> list[list[int]]:
        return [self.encode(t, special) for t in texts]

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        try:
            return b"".join(self.id_bytes[int(i)] for i in ids)
        except KeyError as e:
            raise TokenizerError(f"token id {e.args[0]} is not in this tokenizer's vocabulary "
                                 f"of {self.vocab_size}") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; bytes that do not form valid UTF-8 (a token sequence cut mid-character)
        become U+FFFD, as in GPT-2, tiktoken and `tokenizers`."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # --- files -------------------------------------------------------------------------------------

    def to_hf_json(self) -> dict:
        """The Hugging Face `tokenizer.json` form (GPT-2's layout: ByteLevel pre-tokenizer and decoder)."""
        if self.pattern != GPT2_PATTERN:
            raise TokenizerError("only byte-level BPE with GPT-2's pre-tokenizer pattern "
                                 "can be saved as tokenizer.json")
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": True, "special": True} for t, i in self.special_tokens.items()],
            "normalizer": None,
            "pre_tokenizer": byte_level,
            "post_processor": {**byte_level, "trim_offsets": False},
            "decoder": byte_level,
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                "vocab": {t: i for t, i in self.vocab.items()},
                "merges": [f"{a} {b}" for a, b in self.merges],
            },
        }

    @classmethod
    def from_hf_json(cls, spec: dict, source: str = "tokenizer.json") -> ByteBPE:
        model = spec["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        if any(len(m) != 2 for m in merges):
            raise TokenizerError(f"{source}: a merge is not a pair of tokens")
        vocab = dict(model["vocab"])
        specials = {}
        for t in spec.get("added_tokens") or []:
            vocab.setdefault(t["content"], t["id"])
            specials[t["content"]] = t["id"]
        return cls(vocab, merges, specials)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `directory/tokenizer.json` atomically; returns its path."""
        path = Path(directory) / "tokenizer.json"
        write_json(path, self.to_hf_json())
        return path

    def __repr__(self) -> str:
        return f"ByteBPE(vocab_size={self.vocab_size}, merges={len(self.merges)}, special={list(self.special_tokens)})"


def apply_merges(ids: list[int], ranks: dict[tuple[int, int], tuple[int, int]]) -> list[int]:
    """Encode one word's starting ids: merge the adjacent pair learned earliest (`ranks`: pair -> (rank, id of
    the merged token)), every occurrence of it at once, until no adjacent pair has a rank."""
    while len(ids) > 1:
        pair = min((p for p in pairwise(ids) if p in ranks), key=ranks.__getitem__, default=None)
        if pair is None:
            break
        ids = _merge(ids, pair, ranks[pair][1])
    return ids


def _merge(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """`ids` with every non-overlapping occurrence of `pair`, left to right, replaced by `new`."""
    out, i, n = [], 0, len(ids)
    a, b = pair
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
