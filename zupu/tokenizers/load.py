"""`load(path)`: read any tokenizer zupu saved, or a Hugging Face / GPT-2 tokenizer, from local files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zupu.tokenizers.char import CharTokenizer, TokenizerError


def _is_char_spec(spec: dict) -> bool:
    model = spec.get("model") or {}
    return (model.get("type") == "BPE" and not model.get("merges") and spec.get("pre_tokenizer") is None
            and spec.get("normalizer") is None and (spec.get("decoder") or {}).get("type") == "Fuse")


def from_hf_json(spec: dict, source: str = "tokenizer.json") -> Any:
    """A zupu tokenizer from the parsed contents of a Hugging Face `tokenizer.json`."""
    if _is_char_spec(spec):
        return CharTokenizer.from_hf_json(spec)
    kind = (spec.get("model") or {}).get("type")
    raise TokenizerError(f"{source}: a {kind!r} tokenizer.json of this shape is not supported")


def load(path: str | os.PathLike) -> Any:
    """Load a tokenizer from a directory or file.

    Accepts `tokenizer.json` (what `save` writes, or one written by Hugging Face `tokenizers`),
    or a directory holding one.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        else:
            raise TokenizerError(f"{path}: no tokenizer.json here; pass a directory a tokenizer was saved to")
    if not path.is_file():
        raise TokenizerError(f"{path}: no such tokenizer file or directory")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: not a readable tokenizer.json ({e})") from None
    if not isinstance(spec, dict) or "model" not in spec:
        raise TokenizerError(f"{path}: not a tokenizer.json (no 'model' entry)")
    return from_hf_json(spec, str(path))
