"""`zupu generate RUN --prompt ...`: stream text from a language model and the tokenizer saved beside it.

The text streams through `zupu.sampling.stream_text` (UTF-8 safe, stop strings that span tokens).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from zupu.errors import SettingError


def cmd_generate(args: argparse.Namespace) -> int:
    from zupu import tokenizers
    from zupu.checkpoint import from_pretrained
    from zupu.sampling import stream_text
    from zupu.train.device import resolve

    model = from_pretrained(args.run).to(resolve(args.device))  # the prompt joins it there (`sampling.generate`)
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
    s.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default: cpu)")
    s.set_defaults(func=cmd_generate)
