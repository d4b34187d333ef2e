"""`zupu chat MODEL`: talk to a chat model in the terminal, with its context window in plain sight.

What ChatGPT does between a message and its reply, step by step:
1. the conversation (system prompt, then user and assistant turns) is written out by the model's own chat
   template into one string, "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n" for SmolLM2;
2. the tokenizer cuts it into tokens (`--show-tokens` prints the pieces and how full the window is);
3. the window holds `--context` tokens, the reply included: when the conversation outgrows it, the oldest
   turns are dropped (never the system prompt), and the chat says so;
4. the model samples the reply token by token, streamed as it comes, until its end-of-turn token.

MODEL is a `.gguf` file, a weights-registry name (`smollm2`), or a folder with weights and a tokenizer whose
`tokenizer_config.json` carries a chat template.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zupu.errors import SettingError

if TYPE_CHECKING:
    from torch import nn


def load_chat_model(name: str, quantize: str | None = None) -> tuple[nn.Module, Any]:
    """MODEL -> (model, tokenizer with a chat template). `quantize="int4"` (GGUF files) keeps the file's 4-bit
    blocks: faster replies, bfloat16 products, not bit-equal to the exact float32 weights (the default)."""
    from zupu.checkpoint import from_pretrained
    from zupu.hf import gguf
    from zupu.tokenizers import load
    from zupu.tokenizers.fast import FastBPE
    from zupu.weights import registry

    path = registry.fetch(name) if name in registry.WEIGHTS else Path(name)
    model = from_pretrained(path, quantize=quantize)
    if path.suffix == ".gguf":
        tokenizer = gguf.tokenizer(path)
    elif (path / "tokenizer_config.json").is_file() and json.loads(
            (path / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template"):
        tokenizer = FastBPE.from_directory(path)
    else:
        tokenizer = load(path)
    if not getattr(tokenizer, "chat_template", None):
        raise SettingError(f"{name} has no chat template (tokenizer_config.json's chat_template): it was not "
                           "trained to chat; use `zupu generate` to continue text instead")
    return model, tokenizer


@dataclass
class Chat:
    """A conversation held to a token budget: the prompt plus `max_new_tokens` of reply fit in `context`."""

    model: nn.Module
    tokenizer: Any
    system: str | None = None
    context: int = 2048
    max_new_tokens: int = 256
    turns: list[dict[str, str]] = field(default_factory=list)  # user and assistant messages, oldest first

    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns

    def prompt_ids(self) -> list[int]:
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(self.messages(), True))

    def fit(self) -> int:
        """Drop the oldest turns until the prompt and the reply fit the window; return how many were dropped."""
        dropped = 0
        while len(self.prompt_ids()) + self.max_new_tokens > self.context:
            if len(self.turns) <= 1:
                raise SettingError(f"the system prompt and this message take {len(self.prompt_ids())} tokens; with "
                                   f"{self.max_new_tokens} for the reply that exceeds the {self.context}-token "
                                   "window: shorten them or raise --context")
            # a user turn goes with the assistant's reply to it, so the window never opens on an answer
            n = 2 if len(self.turns) > 2 and self.turns[1]["role"] == "assistant" else 1
            del self.turns[:n]
            dropped += n
        return dropped

    def ask(self, text: str) -> int:
        """Add the user's message and fit the window; return how many old messages were dropped for it."""
        self.turns.append({"role": "user", "content": text})
        return self.fit()

    def reply(self, temperature: float = 0.7, top_p: float | None = 0.9, seed: int | None = None) -> Iterator[str]:
        """Stream the assistant's reply to the conversation so far; it joins the conversation when it ends."""
        from zupu.sampling import stream_text

        prompt = self.tokenizer.apply_chat_template(self.messages(), True)
        pieces = []
        for piece in stream_text(self.model, self.tokenizer, prompt, self.max_new_tokens, temperature, None, top_p,
                                 seed=seed, eos_token_id=self.tokenizer.eos_token_id):
            pieces.append(piece)
            yield piece
        self.turns.append({"role": "assistant", "content": "".join(pieces)})


def show_tokens(chat: Chat) -> str:
    ids = chat.prompt_ids()
    pieces = "".join(f"[{p}]" for p in chat.tokenizer.pieces(ids)).replace("\n", "\\n")
    return f"{pieces}\n(window: {len(ids)} prompt + {chat.max_new_tokens} reply of {chat.context} tokens)"


def cmd_chat(args: argparse.Namespace) -> int:
    model, tokenizer = load_chat_model(args.model, args.quantize)
    limit = model.config.n_positions
    if not 0 < args.context <= limit:
        raise SettingError(f"--context {args.context} must be between 1 and the model's window, {limit}")
    chat = Chat(model, tokenizer, args.system, args.context, args.max_new_tokens)
    print(f"chatting with {args.model} (an empty line or end of input quits)", file=sys.stderr)
    for k, line in enumerate(sys.stdin):
        text = line.rstrip("\n")
        if not text:
            break
        dropped = chat.ask(text)
        if dropped:
            print(f"[context: dropped the {dropped} oldest message(s) to fit {args.context} tokens; the system "
                  "prompt stays]", file=sys.stderr)
        if args.show_tokens:
            print(show_tokens(chat), file=sys.stderr)
        for piece in chat.reply(args.temperature, args.top_p, None if args.seed is None else args.seed + k):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
    return 0


def add_parser(subparsers: Any) -> None:
    s = subparsers.add_parser("chat", help="chat with a model in the terminal (a .gguf, smollm2, or a folder)")
    s.add_argument("model", help="a .gguf file, a weights-registry name (smollm2) or a folder with a chat template")
    s.add_argument("--system", default=None, help="the system prompt (default: the template's own, if any)")
    s.add_argument("--context", type=int, default=2048, help="the token window: prompt plus reply")
    s.add_argument("--max-new-tokens", type=int, default=256, help="the longest reply, in tokens")
    s.add_argument("--temperature", type=float, default=0.7, help="0 is greedy")
    s.add_argument("--top-p", type=float, default=0.9)
    s.add_argument("--seed", type=int, default=None, help="fix the sampling (turn k uses seed + k)")
    s.add_argument("--show-tokens", action="store_true", help="print the window's tokens before each reply")
    add_quantize(s)
    s.set_defaults(func=cmd_chat)


def add_quantize(s: argparse.ArgumentParser) -> None:
    # checked where the file is read (`zupu.hf.gguf.load`), so the parser does not import torch
    s.add_argument("--quantize", default=None, metavar="int4",
                   help="GGUF only: keep the file's 4-bit blocks (int4: faster decoding on AVX-512 CPUs, "
                        "bfloat16 products; benchmarks/RESULTS-llama.md); default: exact float32 weights")
