"""Train a member's recipe into a run directory, or re-evaluate a saved run (the CLI's engine)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zupu import registry
from zupu.checkpoint import load_model, read_config
from zupu.errors import CheckpointError
from zupu.train.run import Run
from zupu.train.threads import auto_threads, threads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def recipe_threads(settings: Any) -> int:
    """The threads a recipe runs on: what its settings' `threads` field asks for (the count measured to suit
    its maths: one for small matrices and step-by-step loops), but no more than the cores free now; with no
    field, or 0 ("auto"), the cores free now (`zupu.train.threads.auto_threads`)."""
    asked = getattr(settings, "threads", 0) or 0
    return 1 if asked == 1 else min(asked, auto_threads()) if asked else auto_threads()


def train(member: str, recipe: str | None = None, out: str | Path | None = None, seed: int = 0,
          quick: bool = False, overrides: dict[str, Any] | None = None, resume: bool = False) -> dict[str, Any]:
    """Train and return what metrics.json holds (metrics, milestone, seconds)."""
    m = registry.get(member)
    r = m.recipe(recipe)
    settings = r.settings(quick=quick, overrides=overrides)
    out = Path(out) if out else Path("runs") / f"{m.name}-{r.name}"
    if resume:  # a resumed run keeps the settings and seed it started with
        saved, meta_path = out / "resume.safetensors", out / "run.json"
        if not saved.exists() or not meta_path.exists():
            raise CheckpointError(f"--resume: {out} holds no interrupted run (no resume.safetensors/run.json)")
        meta = json.loads(meta_path.read_text())
        settings, seed = r.settings(overrides=meta["settings"]), meta["seed"]
    n_threads = recipe_threads(settings)
    with threads(n_threads):
        seed_everything(seed)
        model = r.build(settings)
        run = Run(out, m.name, r.name, settings, seed, resume=resume)
        if resume:
            run.meta_check()
        else:
            run.write_meta()
        metrics = {**r.train(model, settings, run), "threads": n_threads}  # recorded: it depends on the machine
        result = run.finish(model, metrics, r.milestone_for(quick))
        r.figures(model, settings, run)
    return result


def evaluate(run_dir: str | Path) -> dict[str, Any]:
    """Rebuild the model from a run directory and run its recipe's evaluation."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    meta = cfg.get("zupu") or {}
    if "member" not in meta or "recipe" not in meta:
        raise CheckpointError(f"{run_dir / 'config.json'} has no zupu run entry (member, recipe): not a zupu run")
    m = registry.get(meta["member"])
    r = m.recipe(meta["recipe"])
    settings = r.settings(overrides=meta.get("settings") or {})
    model = load_model(run_dir)
    with threads(recipe_threads(settings)):
        return {"member": m.name, "recipe": r.name, "metrics": r.evaluate(model, settings)}
