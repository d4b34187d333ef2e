"""`load(path)`: read any tokenizer zupu saved, or a Hugging Face / GPT-2 tokenizer, from local files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zupu.tokenizers.bpe import ByteBPE
from zupu.tokenizers.char import CharTokenizer, TokenizerError
from zupu.tokenizers.wordpiece import WordPiece

# file pairs that hold GPT-2-style BPE: OpenAI's names, then Hugging Face's
_GPT2_FILES = (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt"))


def _is_char_spec(spec: dict) -> bool:
    model = spec.get("model") or {}
    return (model.get("type") == "BPE" and not model.get("merges") and spec.get("pre_tokenizer") is None
            and spec.get("normalizer") is None and (spec.get("decoder") or {}).get("type") == "Fuse")


def from_hf_json(spec: dict, source: str = "tokenizer.json") -> Any:
    """A zupu tokenizer from the parsed contents of a Hugging Face `tokenizer.json`."""
    if _is_char_spec(spec):
        return CharTokenizer.from_hf_json(spec)
    model, pre, post = (spec.get(k) or {} for k in ("model", "pre_tokenizer", "post_processor"))
    kind = model.get("type")
    # anything this reader would not reproduce exactly is refused, not approximated
    if (kind == "BPE" and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
            and not pre.get("add_prefix_space") and spec.get("normalizer") is None
            and post.get("type") in (None, "ByteLevel")):
        return ByteBPE.from_hf_json(spec, source)
    if (kind == "WordPiece" and pre.get("type") == "BertPreTokenizer"
            and post.get("type") in (None, "BertProcessing", "TemplateProcessing")):
        return WordPiece.from_hf_json(spec, source)
    raise TokenizerError(f"{source}: a {kind!r} tokenizer.json with normalizer "
                         f"{(spec.get('normalizer') or {}).get('type')}, pre-tokenizer {pre.get('type')} and "
                         f"post-processor {post.get('type')} is not supported; zupu reads character-level, "
                         "GPT-2-style byte-level BPE and BERT-style WordPiece tokenizers")


def load(path: str | os.PathLike) -> Any:
    """Load a tokenizer from a directory or file.

    Accepts `tokenizer.json` (what `save` writes, or one written by Hugging Face `tokenizers`),
    or a directory holding one, or GPT-2's `encoder.json` + `vocab.bpe` (HF: `vocab.json` +
    `merges.txt`), or BERT's `vocab.txt` (WordPiece; lowercasing as its `tokenizer_config.json` says).
    """
    path = Path(path)
    if path.is_dir():
        if (path / "tokenizer_config.json").is_file() and (path / "tokenizer.json").is_file():
            try:  # a chat model's folder (zupu's llama runs): zupu's ByteBPE where it can, else FastBPE
                return load(path / "tokenizer.json")
            except TokenizerError:
                from zupu.tokenizers.fast import FastBPE

                return FastBPE.from_directory(path)
        if (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        else:
            for vocab, merges in _GPT2_FILES:
                if (path / vocab).is_file() and (path / merges).is_file():
                    return ByteBPE.from_gpt2_files(path / vocab, path / merges)
            if (path / "vocab.txt").is_file():
                return WordPiece.from_directory(path)
            raise TokenizerError(f"{path}: no tokenizer.json, encoder.json + vocab.bpe, vocab.json + merges.txt "
                                 "or vocab.txt here; pass a directory a tokenizer was saved to")
    if not path.is_file():
        raise TokenizerError(f"{path}: no such tokenizer file or directory")
    if path.suffix == ".txt":
        return WordPiece.from_vocab_txt(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: not a readable tokenizer.json ({e})") from None
    if not isinstance(spec, dict) or "model" not in spec:
        raise TokenizerError(f"{path}: not a tokenizer.json (no 'model' entry)")
    return from_hf_json(spec, str(path))
