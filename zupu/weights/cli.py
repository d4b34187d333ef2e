"""`zupu weights list` and `zupu weights fetch NAME|all`: the weights registry from the command line."""

from __future__ import annotations

import argparse
from typing import Any

from zupu import weights


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def cmd_weights(args: argparse.Namespace) -> int:
    for w in weights.WEIGHTS.values() if args.name == "all" else [weights.get(args.name)]:
        if args.action == "list":  # the state from the files' presence; fetch verifies them
            print(f"{w.name:<18} {str(w.source):<58} {w.licence:<11} {_megabytes(w.size):>9}  {w.state():<9}"
                  f" {w.summary}")
        else:
            print(f"{w.name}: {len(w.files)} file{'s' if len(w.files) > 1 else ''} verified: {w.fetch()}")
    return 0


def add_parser(subparsers: Any) -> None:
    s = subparsers.add_parser("weights", help="pretrained weights: list|fetch [NAME|all] (sha256-verified)")
    s.add_argument("action", choices=["list", "fetch"])
    s.add_argument("name", nargs="?", default="all")
    s.set_defaults(func=cmd_weights)
