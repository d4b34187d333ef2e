"""`FastBPE`: a byte-level BPE tokenizer run by Hugging Face's `tokenizers` (Rust), with a chat template.

Used where zupu's own `ByteBPE` cannot go: a vocabulary that lacks some of the 256 byte tokens (SmolLM2's
lacks 21; `tokenizers` then drops an unencodable byte, as transformers does), and models whose 49k-token
prompts are encoded on every chat turn. The pre-tokenizer is GPT-2's (`ByteLevel`, its regex, no prefix
space), as transformers builds it from a GGUF's `tokenizer.ggml.*` metadata.

The chat template is the model's own Jinja template, rendered like transformers' `apply_chat_template`
(`zupu.tokenizers.chat`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zupu.atomic import write_json
from zupu.tokenizers.char import TokenizerError


class FastBPE:
    def __init__(self, tokenizer: Any, special_tokens: dict[str, int], chat_template: str | None = None,
                 eos_token: str | None = None, bos_token: str | None = None):
        self.backend = tokenizer  # a tokenizers.Tokenizer
        self.special_tokens = dict(special_tokens)
        self.chat_template = chat_template
        self.eos_token, self.bos_token = eos_token, bos_token

    @classmethod
    def from_vocab(cls, tokens: Sequence[str], merges: Sequence[tuple[str, str]], special_tokens: dict[str, int],
                   **kw: Any) -> FastBPE:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        bpe = models.BPE({t: i for i, t in enumerate(tokens)}, [tuple(m) for m in merges])
        tok = Tokenizer(bpe)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, _ in sorted(special_tokens.items(), key=lambda x: x[1])])
        return cls(tok, special_tokens, **kw)

    @classmethod
    def from_directory(cls, path: str | os.PathLike) -> FastBPE:
        """A folder with `tokenizer.json` (and `tokenizer_config.json` for the chat template and eos token)."""
        from tokenizers import Tokenizer

        path = Path(path)
        try:
            tok = Tokenizer.from_file(str(path / "tokenizer.json"))
            config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")) \
                if (path / "tokenizer_config.json").is_file() else {}
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception on a bad file
            raise TokenizerError(f"{path / 'tokenizer.json'} is not a readable tokenizer ({e})") from None
        specials = {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}
        return cls(tok, specials, config.get("chat_template"), config.get("eos_token"), config.get("bos_token"))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    @property
    def eos_token_id(self) -> int | None:
        return self.special_tokens.get(self.eos_token) if self.eos_token else None

    def encode(self, text: str, special: bool = True) -> list[int]:
        """Token ids of `text`; with `special=False` a special token written in the text is ordinary text."""
        if special:
            return self.backend.encode(text, add_special_tokens=False).ids
        # the backend always matches added tokens: a special token's text is split off and encoded by the BPE model
        ids: list[int] = []
        for piece in _split_keep(text, list(self.special_tokens)):
            ids += self._ordinary(piece) if piece in self.special_tokens else self.encode(piece)
        return ids

    def _ordinary(self, text: str) -> list[int]:
        pieces = self.backend.pre_tokenizer.pre_tokenize_str(text)
        return [t.id for p, _ in pieces for t in self.backend.model.tokenize(p)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """Each token as the text it stands for (what `zupu chat --show-tokens` prints)."""
        return [self.decode([i]) for i in ids]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for: a piece of a multi-byte character decodes to U+FFFD, its bytes do not."""
        from zupu.tokenizers.bpe import bytes_to_unicode

        piece = self.backend.id_to_token(token_id)
        if token_id in self.special_tokens.values():
            return piece.encode("utf-8")
        to_byte = {c: b for b, c in bytes_to_unicode().items()}
        return bytes(to_byte[c] for c in piece)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        from zupu.tokenizers.chat import render

        if not self.chat_template:
            raise TokenizerError("this tokenizer has no chat template; a chat needs a model that ships one")
        return render(self.chat_template, messages, add_generation_prompt, eos_token=self.eos_token,
                      bos_token=self.bos_token)

    def save(self, directory: str | os.PathLike) -> Path:
        """tokenizer.json + tokenizer_config.json, which transformers' AutoTokenizer loads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "tokenizer.json", json.loads(self.backend.to_str()))
        write_json(directory / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": self.chat_template,
            "eos_token": self.eos_token, "bos_token": self.bos_token, "model_max_length": 1 << 30})
        return directory / "tokenizer.json"

    def __repr__(self) -> str:
        return f"FastBPE(vocab_size={self.vocab_size}, special={list(self.special_tokens)[:4]}...)"


def _split_keep(text: str, specials: list[str]) -> list[str]:
    if not specials:
        return [text]
    pattern = "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
    return [p for p in re.split(pattern, text) if p]
