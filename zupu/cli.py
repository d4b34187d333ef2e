"""The `zupu` command: tree, train, eval, tour, data, and the sub-commands other rooms add.

A room adds sub-commands with no list to edit: a module in `zupu/apps/`, or a module named `cli.py` in
any sub-package of zupu (`zupu/hub/cli.py`), that defines `add_parser(subparsers)` is found by walking
the package folders (`command_modules`). Those modules keep heavy imports (torch) inside their command
functions, so building the parser, `zupu --help` and the commands that do not need torch stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zupu import registry
from zupu.errors import ZupuError

PACKAGE = Path(__file__).parent


def cmd_tree(args: argparse.Namespace) -> int:
    rows = registry.members()
    if args.json:
        print(json.dumps([{"name": m.name, "year": m.year, "paper": m.paper, "authors": m.authors,
                           "parents": list(m.parents), "status": m.status,
                           "recipes": list(m.recipes()) if m.works else []} for m in rows], ensure_ascii=False))
        return 0
    era = None
    for m in sorted(rows, key=lambda m: (registry.ERAS.index(m.era), m.year)):
        if m.era != era:
            era = m.era
            print(f"\n{era}")
        mark = "●" if m.works else "○"
        paper = m.paper if len(m.paper) <= 64 else m.paper[:63] + "…"
        parents = f"  ← {', '.join(m.parents)}" if m.parents else ""
        print(f"  {mark} {m.name:<18} {m.year}  {m.status:<7} {paper}{parents}")
    works = sum(m.works for m in rows)
    print(f"\n{works} of {len(rows)} members work (● works, ○ planned)")
    return 0


def train_argv(args: argparse.Namespace) -> list[str]:
    """The `zupu train` arguments of `args` without --nproc: what each torchrun rank runs."""
    argv = ["train", args.member, "--seed", str(args.seed), "--device", args.device]
    for flag, value in (("--recipe", args.recipe), ("--out", args.out)):
        if value:
            argv += [flag, value]
    for pair in args.set:
        argv += ["--set", pair]
    return argv + ["--quick"] * args.quick + ["--resume"] * args.resume


def cmd_train(args: argparse.Namespace) -> int:
    from zupu.recipe import parse_sets

    if args.nproc != 1:  # the short form of torchrun on this machine; the ranks print the result
        from zupu.train.distributed import run_torchrun

        run_torchrun(args.nproc, train_argv(args))
        return 0
    from zupu.train.launch import train

    try:
        result = train(args.member, args.recipe, args.out, args.seed, args.quick, parse_sets(args.set), args.resume,
                       args.device)
    except KeyboardInterrupt:
        print("interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") != "0":  # a torchrun rank other than the first: rank 0 reports
        return 0
    ms = result["milestone"]
    verdict = "reached" if ms["passed"] else "MISSED"
    print(json.dumps(result["metrics"], indent=2))
    print(f"milestone {ms['name']} = {ms['value']} (target {ms['op']} {ms['target']}): {verdict}"
          f" in {result['seconds']} s")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from zupu.train.launch import evaluate

    print(json.dumps(evaluate(args.run, args.device), indent=2))
    return 0


def cmd_tour(args: argparse.Namespace) -> int:
    from zupu.tour import tour, why

    try:
        report = tour(args.out, quick=args.quick, only=args.only, skip=args.skip, jobs=args.jobs)
    except KeyboardInterrupt:
        again = "" if args.quick else "; run the same command again to continue where it stopped"
        print(f"interrupted{again}", file=sys.stderr)
        return 130
    missed = [m for m in report["members"] if not m["milestone"]["passed"]]
    print(f"report: {args.out}/report.html ({len(report['members'])} recipes, {len(missed)} milestones missed, "
          f"{report['seconds']:.0f} s)")
    for m in missed:
        print(f"missed: {m['name']} · {m['recipe']}: {why(m)}", file=sys.stderr)
    return 1 if missed else 0


def cmd_data(args: argparse.Namespace) -> int:
    from zupu import data
    from zupu.data.download import cache_dir

    if args.action == "list":
        for d in data.DATASETS.values():
            cached = all((cache_dir() / "data" / f.path).exists() for f in d.files)
            state = "builtin" if not d.files else ("cached" if cached else "-")
            print(f"{d.name:<16} {len(d.files):>3} files  {state:<7}  {d.licence:<28} {d.summary}")
        return 0
    if args.action == "push":
        from zupu.data import publish

        if not args.repo:
            raise ZupuError("data push needs NAME and ORG/NAME, e.g. "
                            "`zupu data push tinyshakespeare alice/shakespeare`")
        print(publish.push(args.name, args.repo, private=args.private))
        return 0
    names = list(data.DATASETS) if args.name == "all" else [args.name]
    for name in names:
        paths = data.fetch(name)
        print(f"{name}: {len(paths)} files verified in {cache_dir() / 'data'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zupu", description="The neural-network family tree, runnable.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("tree", help="the family tree: members, papers, parents, status")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_tree)

    s = sub.add_parser("train", help="train a member's recipe into a run directory")
    s.add_argument("member")
    s.add_argument("--recipe", help="recipe name (default: the member's first)")
    s.add_argument("--out", help="run directory (default: runs/MEMBER-RECIPE)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    s.add_argument("--quick", action="store_true", help="the recipe's quick settings (what the tour runs)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    s.add_argument("--device", default="cpu", help="auto (a GPU if there is one), cpu, cuda, cuda:N or mps "
                   "(default: cpu)")
    s.add_argument("--nproc", type=int, default=1, metavar="N", help="train data-parallel in N processes on this "
                   "machine (torchrun --standalone --nproc-per-node N); for several machines call torchrun directly")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="re-evaluate a saved run and print its metrics as JSON")
    s.add_argument("run")
    s.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the device the run trained on, "
                   "or auto where this machine lacks it)")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("tour", help="run every working member's recipes (exit 1 if a milestone is missed); "
                       "write report.html/json")
    s.add_argument("--quick", action="store_true", help="quick settings (minutes in all)")
    s.add_argument("--out", default="tour")
    s.add_argument("--only", nargs="+", metavar="MEMBER", help="run only these members")
    s.add_argument("--skip", nargs="+", metavar="MEMBER", help="leave these members out")
    s.add_argument("--jobs", type=int, help="recipes side by side (default: the cores this process may use)")
    s.set_defaults(func=cmd_tour)

    s = sub.add_parser("data", help="datasets: list, fetch NAME|all, push NAME ORG/NAME (to a hub)")
    s.add_argument("action", choices=["list", "fetch", "push"])
    s.add_argument("name", nargs="?", default="all")
    s.add_argument("repo", nargs="?", help="push: the hub's dataset repo (ZUPU_HUB_URL or HF_ENDPOINT, HF_TOKEN)")
    s.add_argument("--private", action="store_true", help="push: a private repo")
    s.set_defaults(func=cmd_data)

    add_commands(sub, command_modules())
    return p


def command_modules(package: Path = PACKAGE, name: str = "zupu") -> list[str]:
    """Modules that may add sub-commands: every module of `apps/` and every sub-package's `cli` module,
    found in the folders without importing anything."""
    found = [f"{name}.apps.{m.name}" for m in pkgutil.iter_modules([str(package / "apps")])]
    found += [f"{name}.{m.name}.cli" for m in pkgutil.iter_modules([str(package)])
              if m.ispkg and (package / m.name / "cli.py").is_file()]
    return sorted(found)


def add_commands(subparsers: Any, modules: Sequence[str]) -> None:
    """Call `add_parser(subparsers)` of each module that defines one. A module whose optional dependency
    is missing (the hub's extras) is left out, and its commands with it; an error inside zupu is raised."""
    for module in modules:
        try:
            add_parser = getattr(importlib.import_module(module), "add_parser", None)
        except ModuleNotFoundError as e:
            if e.name is None or e.name == "zupu" or e.name.startswith("zupu."):
                raise
            continue
        if add_parser is not None:
            add_parser(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZupuError as e:
        print(f"zupu: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
