"""`zupu generate RUN --prompt ...`: stream text from a language model and the tokenizer saved beside it.

`stream_text` turns the model's stream of token ids into a stream of text pieces. Two things make that
more than `decode(token)`: a byte-level BPE token can end in the middle of a UTF-8 character (a piece is
held back until it decodes cleanly), and a stop string can span several tokens (text that might be the
start of one is held back until it is clearly not; generation ends where one appears, without it).
"""

from __future__ import annotations

import argparse
import sys
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
                seed: int | None = None) -> Iterator[str]:
    """Yield the continuation of `prompt` piece by piece; joined, the pieces are the whole continuation,
    cut before the first stop string (and at the tokenizer's <|endoftext|>, if it has one)."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise SettingError("the prompt encodes to no tokens; give a non-empty --prompt")
    eos = getattr(tokenizer, "special_tokens", {}).get(ENDOFTEXT)
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


def cmd_generate(args: argparse.Namespace) -> int:
    from zupu import tokenizers
    from zupu.checkpoint import from_pretrained

    model = from_pretrained(args.run)
    if not hasattr(model, "generate"):
        raise SettingError(f"{args.run} holds a {type(model).__name__}, which does not generate text")
    tokenizer = tokenizers.load(args.run)
    prompt = args.prompt
    for k in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {k + 1}", flush=True)
        sys.stdout.write(prompt)
        for piece in stream_text(model, tokenizer, prompt, args.max_new_tokens, args.temperature, args.top_k,
                                 args.top_p, args.stop, None if args.seed is None else args.seed + k):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    return 0


def add_parser(subparsers: Any) -> None:
    s = subparsers.add_parser("generate", help="stream text from a trained language model (a run or HF dir)")
    s.add_argument("run", help="a zupu run directory or HF checkpoint directory with its tokenizer")
    s.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    s.add_argument("--max-new-tokens", type=int, default=200)
    s.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--stop", action="append", default=[], metavar="TEXT", help="end at this text (repeatable)")
    s.add_argument("--num-samples", type=int, default=1)
    s.add_argument("--seed", type=int, default=None, help="fix the sampling (sample k uses seed + k)")
    s.set_defaults(func=cmd_generate)
