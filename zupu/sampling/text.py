"""From a stream of token ids to a stream of text: UTF-8 safety and stop strings that span tokens.

`stream_text` turns a model's stream of token ids into a stream of text pieces. Two things make that
more than `decode(token)`: a byte-level BPE token can end in the middle of a UTF-8 character (a piece is
held back until it decodes cleanly), and a stop string can span several tokens (text that might be the
start of one is held back until it is clearly not; generation ends where one appears, without it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from zupu.errors import SettingError

ENDOFTEXT = "<|endoftext|>"


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` could still grow into one of `stops`."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if s.startswith(text[-n:]):
                longest = n
                break
    return longest


def stream_text(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
                top_k: int | None = None, top_p: float | None = None, stop: Sequence[str] = (),
                seed: int | None = None, eos_token_id: int | None = None) -> Iterator[str]:
    """Yield the continuation of `prompt` piece by piece; joined, the pieces are the whole continuation,
    cut before the first stop string and at `eos_token_id` (default: the tokenizer's <|endoftext|>, if it has
    one; a chat model's is its end-of-turn token). `model` is anything whose `generate(input_ids,
    max_new_tokens, ...)` streams token ids (B,), as `GPT.generate` does."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise SettingError("the prompt encodes to no tokens; give a non-empty --prompt")
    eos = eos_token_id if eos_token_id is not None else getattr(tokenizer, "special_tokens", {}).get(ENDOFTEXT)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    stops = [s for s in stop if s]
    new: list[int] = []
    sent = 0  # characters of the decoded continuation already yielded
    tokens = model.generate(torch.tensor([ids]), max_new_tokens, temperature=temperature, top_k=top_k,
                            top_p=top_p, eos_token_id=eos, generator=generator)
    for token in tokens:
        if eos is not None and int(token[0]) == eos:
            break
        new.append(int(token[0]))
        text = tokenizer.decode(new)
        if text.endswith("\ufffd"):
            continue  # an unfinished UTF-8 character: wait for its remaining bytes
        hits = [i for i in (text.find(s, sent) for s in stops) if i >= 0]  # held-back text keeps stops >= sent
        if hits:
            if min(hits) > sent:
                yield text[sent:min(hits)]
            return
        ready = len(text) - _held_back(text, stops)
        if ready > sent:
            yield text[sent:ready]
            sent = ready
    text = tokenizer.decode(new)
    if len(text) > sent:
        yield text[sent:]
