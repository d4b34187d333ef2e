"""`zupu tour`: run every working member's recipes, side by side where they can, and write one report.

Recipes whose settings ask for one thread (`threads=1`: small matrices, step-by-step loops) run in a pool
of processes, one per usable core; the others run one after another in this process with every thread.
A full tour (no --quick) continues where it stopped: a finished run (metrics.json made by the same
settings) is reused, an interrupted one resumes where its recipe left a resume checkpoint, others restart.
report.json follows the contract in DESIGN.md; report.html (zupu/report.py) is drawn from it.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from zupu import registry
from zupu.atomic import write_json
from zupu.errors import MemberNotReady
from zupu.recipe import Recipe

# What a quick tour may take on 2 idle cores, summed from the recipes' declared quick_seconds
# (tests/test_tour.py holds every working recipe to it). Raised from 600 when dalle's quick recipe (90 s of one
# core: a dVAE, a GPT and a CLIP trained in turn) took the declared total from 585 s to 631 s.
QUICK_BUDGET_SECONDS = 600


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, a container's CPU set), not the machine's count."""
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def select(only: Iterable[str] | None = None, skip: Iterable[str] | None = None) -> list[registry.Member]:
    """The working members a tour runs, by year. Names are checked before any work starts: an unknown one
    raises UnknownMember (with a did-you-mean), a planned one MemberNotReady."""
    only, skip = list(only or []), list(skip or [])
    for name in only + skip:
        registry.get(name)
    for name in only:
        if not registry.get(name).works:
            raise MemberNotReady(f"--only {name}: member {name!r} is planned, not implemented (see `zupu tree`)")
    return sorted((m for m in registry.members() if m.works and (not only or m.name in only) and m.name not in skip),
                  key=lambda m: m.year)


def one_thread(recipe: Recipe, quick: bool) -> bool:
    """Whether the recipe's settings keep it on one thread, so that it may run beside others."""
    return getattr(recipe.settings(quick=quick), "threads", None) == 1


def side_by_side(recipe: Recipe, quick: bool) -> bool:
    """Whether the tour runs the recipe in its pool of one-thread workers: every quick recipe (their declared
    quick_seconds are one-thread times, and two small models on two cores finish sooner side by side than one
    after another on two threads each), and the full recipes whose settings keep them on one thread."""
    return quick or one_thread(recipe, quick)


def planned_seconds(recipes: Iterable[tuple[float, bool]], cores: int) -> float:
    """Wall time of a tour from (seconds, one_thread) per recipe: the one-thread recipes spread over `cores`
    workers, longest first (the pool's order), then the others one after another."""
    recipes = list(recipes)
    workers = [0.0] * max(1, cores)
    for s in sorted((s for s, solo in recipes if solo), reverse=True):
        workers[workers.index(min(workers))] += s
    return max(workers) + sum(s for s, solo in recipes if not solo)


def _as_json(settings: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def _state(run_dir: Path, member: str, recipe: str, settings: dict[str, Any]) -> str:
    """"done", "resume" or "fresh" for a full tour's run directory: only a run of these very settings counts."""
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return "fresh"
    made_by = (meta.get("member"), meta.get("recipe"), meta.get("seed"), meta.get("settings"))
    if made_by != (member, recipe, 0, settings):
        return "fresh"
    if (run_dir / "metrics.json").is_file() and (run_dir / "model.safetensors").is_file():
        return "done"
    return "resume" if (run_dir / "resume.safetensors").is_file() else "fresh"


def run_one(member: str, recipe: str, run_dir: str, quick: bool) -> dict[str, Any]:
    """Train (or reuse, or resume) one recipe and return its report entry; an error is recorded, not raised,
    so one broken member does not sink the tour. Module-level so a worker process can run it."""
    from zupu.train.launch import train

    m = registry.get(member)
    r = m.recipe(recipe)
    settings = r.settings(quick=quick)
    out = Path(run_dir)
    state = "fresh" if quick else _state(out, member, recipe, _as_json(settings))
    entry: dict[str, Any] = {"name": member, "recipe": recipe, "quick": dict(r.quick) if quick else {},
                             "settings": _as_json(settings), "run": state}
    t0 = time.perf_counter()
    try:
        if state == "done":
            result = json.loads((out / "metrics.json").read_text())
        else:
            result = train(member, recipe, out, seed=0, quick=quick, resume=state == "resume")
        entry.update(milestone=result["milestone"], metrics=result["metrics"], seconds=result["seconds"])
    except Exception as e:  # noqa: BLE001 - the report names it; the tour goes on
        entry.update(milestone={**r.milestone_for(quick).judge({}), "passed": False}, metrics={},
                     seconds=round(time.perf_counter() - t0, 2),
                     error="".join(traceback.format_exception_only(type(e), e)).strip())
    return entry


def why(entry: dict[str, Any]) -> str:
    """One line: the milestone's value against its target, or the error that stopped the run."""
    ms = entry["milestone"]
    if entry.get("error"):
        return f"error: {entry['error'].splitlines()[-1]}"
    value = "no value" if ms["value"] is None else f"{ms['value']:.4g}"
    verdict = "reached" if ms["passed"] else "MISSED"
    return f"{ms['name']} = {value}, target {ms['op']} {ms['target']:.4g}: {verdict}"


def _line(i: int, n: int, entry: dict[str, Any]) -> str:
    reused = {"done": " (reused)", "resume": " (resumed)"}.get(entry.get("run", ""), "")
    return f"[{i}/{n}] {entry['name']} · {entry['recipe']}: {why(entry)} in {entry['seconds']:.0f} s{reused}"


def _quiet_worker() -> None:
    os.environ["ZUPU_PROGRESS"] = "0"  # side by side, bars would interleave: each recipe gets one line instead
    import torch

    torch.set_num_threads(1)  # one core per worker: recipes' own thread choices are capped by this count


def table(entries: list[dict[str, Any]]) -> str:
    """The final table printed after a tour."""
    rows = [("member", "recipe", "milestone", "value", "target", "", "s")]
    for e in entries:
        ms = e["milestone"]
        value = "error" if e.get("error") else "-" if ms["value"] is None else f"{ms['value']:.4g}"
        rows.append((e["name"], e["recipe"], ms["name"], value, f"{ms['op']} {ms['target']:.4g}",
                     "ok" if ms["passed"] else "MISSED", f"{e['seconds']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def tour(out: str | Path = "tour", quick: bool = True, only: list[str] | None = None,
         skip: list[str] | None = None, jobs: int | None = None) -> dict[str, Any]:
    """Run the selected members' tour recipes into `out` and write report.json and report.html there."""
    from zupu.report import write_html

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = select(only, skip)
    work = [(m, r) for m in chosen for r in m.recipes().values() if r.in_tour]
    cores = jobs or usable_cores()
    side = [(m, r) for m, r in work if cores > 1 and side_by_side(r, quick)]
    side = side if len(side) > 1 else []  # a pool for one recipe would only cost a process start
    alone = [(m, r) for m, r in work if (m, r) not in side]
    side.sort(key=lambda mr: -(mr[1].quick_seconds or 0))  # longest first: the pool ends together
    print(f"zupu tour: {len(work)} recipes; {len(side)} side by side on {cores} cores, {len(alone)} one at a time",
          file=sys.stderr, flush=True)
    if side:
        print(f"side by side: {', '.join(f'{m.name} · {r.name}' for m, r in side)}", file=sys.stderr, flush=True)
    started, entries = time.perf_counter(), []

    def record(entry: dict[str, Any]) -> None:
        entries.append(entry)
        print(_line(len(entries), len(work), entry), file=sys.stderr, flush=True)

    if side:
        with ProcessPoolExecutor(min(cores, len(side)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_quiet_worker) as pool:
            futures = [pool.submit(run_one, m.name, r.name, str(out / m.name / r.name), quick) for m, r in side]
            try:
                for f in as_completed(futures):
                    record(f.result())
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    for m, r in alone:
        print(f"[{len(entries) + 1}/{len(work)}] {m.name} · {r.name}: running", file=sys.stderr, flush=True)
        record(run_one(m.name, r.name, str(out / m.name / r.name), quick))
    seconds = time.perf_counter() - started
    order = {(m.name, r.name): i for i, (m, r) in enumerate(work)}
    entries.sort(key=lambda e: order[e["name"], e["recipe"]])
    for e in entries:
        run_dir = out / e["name"] / e["recipe"]
        e["figures"] = sorted(str(p.relative_to(out)) for p in run_dir.glob("*.png"))
        e["texts"] = sorted(str(p.relative_to(out)) for p in run_dir.glob("*.txt"))
    report = {"members": entries, "seconds": round(seconds, 2), "quick": quick, "cores": cores,
              "only": list(only or []), "skip": list(skip or [])}
    write_json(out / "report.json", report)
    write_html(out, report)
    print(table(entries), file=sys.stderr, flush=True)
    return report
