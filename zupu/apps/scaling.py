"""`zupu scaling`: a model-size sweep of char GPTs on fixed data, fitted by a power law L(N) (the
recipe is `zupu.recipes.scaling`; this is its command)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_scaling(args: argparse.Namespace) -> int:
    from zupu.recipe import parse_sets
    from zupu.train.launch import train

    result = train("scaling", "char-sweep", args.out, args.seed, args.quick, parse_sets(args.set))
    m = result["metrics"]
    print(f"L(N) = {m['l_inf']:.3f} + ({m['n_c']:.3g} / N)^{m['alpha']:.3f}   R^2 = {m['r2']:.3f}   "
          f"({m['sizes']} sizes, N = {m['smallest_params']:,} .. {m['largest_params']:,})")
    print("the largest model's loss predicted from the others (relative error): " + ", ".join(
        f"{shape} {m[f'holdout_error_{shape}']:.2%}" for shape in ("power_law", "log_linear", "exponential", "flat")))
    print(f"the exponent describes tiny models trained briefly; Kaplan et al. report alpha_N ~ 0.076 at scale. "
          f"plot: {args.out or 'runs/scaling-char-sweep'}/scaling.png")
    return 0


def add_parser(subparsers: Any) -> None:
    s = subparsers.add_parser("scaling", help="a model-size sweep on fixed data, fitted by a power law L(N)")
    s.add_argument("--out", default=None, help="run directory (default runs/scaling-char-sweep)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quick", action="store_true", help="five smaller models, fewer steps")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    s.set_defaults(func=cmd_scaling)
