"""Each recipe alone, then beside a process that holds one core: how much slower it gets.

    ZUPU_DATA_MIRROR=../shared/data python benchmarks/busy_core.py [--quick] [--only gpt:shakespeare-char ...]

A user's machine is rarely idle. A recipe takes its threads from the cores its process may use and what
other work leaves free of them when it starts (`zupu.train.threads.auto_threads`), so beside a process
that spins on one core it should lose at most that core: about 2x on a 2-core machine, not the 20-30x
that two threads fighting a busy core were measured to cost. Each recipe is trained in a fresh process
(`zupu train`, its `tiny` settings, or `--quick` ones), alone and then beside a spinner pinned to the
first usable CPU, alternating `--repeats` times; the table gives the median wall times, their ratio
and the threads each run chose (its metrics.json records them).
Writes benchmarks/RESULTS-busy-core.md (or --out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import Run

from zupu import registry
from zupu.train.threads import usable_cpus


def spin(cpu: int) -> None:
    """Hold one CPU busy until terminated: the other process on the user's machine."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    while True:
        pass


def train_once(member: str, recipe: str, settings: dict, out: Path) -> tuple[float, int]:
    """(wall seconds, threads chosen) of one `zupu train` in a fresh process."""
    sets = [f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in settings.items()]
    cmd = [sys.executable, "-m", "zupu", "train", member, "--recipe", recipe, "--out", str(out)]
    cmd += [a for kv in sets for a in ("--set", kv)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    return seconds, json.loads((out / "metrics.json").read_text())["metrics"].get("threads", 0)


def recipes(only: list[str]) -> list[tuple[str, str]]:
    pairs = [(m.name, r.name) for m in registry.MEMBERS if m.works for r in m.recipes().values() if r.in_tour]
    if only:
        pairs = [p for p in pairs if f"{p[0]}:{p[1]}" in only or p[0] in only]
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the quick settings (default: each recipe's tiny ones)")
    ap.add_argument("--only", nargs="*", default=[], help="members or member:recipe pairs (default: all)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-busy-core.md")))
    args = ap.parse_args()
    run = Run(__file__)
    cpu = usable_cpus()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for member, name in recipes(args.only):
            r = registry.get(member).recipe(name)
            settings = dict(r.quick) if args.quick else dict(r.tiny or {})
            idle, busy, threads = [], [], {}
            for k in range(args.repeats):
                seconds, threads["idle"] = train_once(member, name, settings, Path(tmp, f"{member}-{name}-i{k}"))
                idle.append(seconds)
                spinner = multiprocessing.get_context("spawn").Process(target=spin, args=(cpu,), daemon=True)
                spinner.start()
                try:
                    time.sleep(0.5)  # the spinner is running before the recipe looks for free cores
                    seconds, threads["busy"] = train_once(member, name, settings, Path(tmp, f"{member}-{name}-b{k}"))
                finally:
                    spinner.terminate()
                    spinner.join()
                busy.append(seconds)
            i, b = statistics.median(idle), statistics.median(busy)
            rows.append(f"| {member} | {name} | {i:.1f} | {b:.1f} | {b / i:.2f}x | {threads['idle']} | "
                        f"{threads['busy']} |")
            print(rows[-1], flush=True)
    kind = "quick" if args.quick else "tiny"
    markdown = (f"# Recipes beside a busy core ({kind} settings)\n\n"
                f"Each recipe trained alone, then beside a process spinning on CPU {cpu} of the "
                f"{len(usable_cpus())} this process may use; medians of {args.repeats}.\n\n"
                "| member | recipe | alone (s) | beside a busy core (s) | slowdown | threads alone | threads busy |\n"
                "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(run.write(args.out, markdown))


if __name__ == "__main__":
    main()
