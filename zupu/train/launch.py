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
from zupu.errors import CheckpointError, SettingError
from zupu.train import device as devices
from zupu.train.distributed import launched, local_device, session
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
          quick: bool = False, overrides: dict[str, Any] | None = None, resume: bool = False,
          device: str = "cpu") -> dict[str, Any]:
    """Train on `device` (`zupu.train.device.resolve`) and return what metrics.json holds (metrics, milestone,
    seconds). Started by torchrun as one of several processes, train data-parallel (`zupu.train.distributed`)."""
    m = registry.get(member)
    r = m.recipe(recipe)
    if launched() and not r.data_parallel:
        raise SettingError(f"{m.name} {r.name} cannot be split over processes (its training is not a sequence of "
                           "batches the ranks can share); run it as one process, without --nproc or torchrun")
    where = local_device(devices.resolve(device))
    settings = r.settings(quick=quick, overrides=overrides)
    out = Path(out) if out else Path("runs") / f"{m.name}-{r.name}"
    if resume:  # a resumed run keeps the settings and seed it started with
        saved, meta_path = out / "resume.safetensors", out / "run.json"
        if not saved.exists() or not meta_path.exists():
            raise CheckpointError(f"--resume: {out} holds no interrupted run (no resume.safetensors/run.json)")
        meta = json.loads(meta_path.read_text())
        settings, seed = r.settings(overrides=meta["settings"]), meta["seed"]
    n_threads = recipe_threads(settings)
    with threads(n_threads), devices.using(where), session(where) as world:
        seed_everything(seed)  # the same seed on every rank: the same initial weights
        model = r.build(settings).to(where)  # before `train` makes its optimiser over the parameters
        run = Run(out, m.name, r.name, settings, seed, resume=resume, writer=world.main)
        try:
            if world.main and resume:
                run.meta_check()
            elif world.main:
                run.write_meta()
            # recorded: they depend on the machine
            metrics = {**r.train(model, settings, run), "threads": n_threads, "device": str(where)}
            if world.size > 1:
                metrics["processes"] = world.size
            result = run.finish(model, metrics, r.milestone_for(quick))
            if world.main:  # figures read weights into numpy and sample on the host
                r.figures(model.cpu(), settings, run)
        finally:
            run.close()
    return result


def evaluate(run_dir: str | Path, device: str | None = None) -> dict[str, Any]:
    """Rebuild the model from a run directory and run its recipe's evaluation on `device`: by default the one the
    run trained on (its metrics.json), or where this machine lacks it, "auto"."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    meta = cfg.get("zupu") or {}
    if "member" not in meta or "recipe" not in meta:
        raise CheckpointError(f"{run_dir / 'config.json'} has no zupu run entry (member, recipe): not a zupu run")
    m = registry.get(meta["member"])
    r = m.recipe(meta["recipe"])
    settings = r.settings(overrides=meta.get("settings") or {})
    where = devices.resolve(device) if device is not None else _trained_on(run_dir)
    model = load_model(run_dir).to(where)
    with threads(recipe_threads(settings)), devices.using(where):
        return {"member": m.name, "recipe": r.name, "device": str(where), "metrics": r.evaluate(model, settings)}


def _trained_on(run_dir: Path) -> torch.device:
    try:
        return devices.resolve(json.loads((run_dir / "metrics.json").read_text())["metrics"]["device"])
    except (OSError, ValueError, KeyError, TypeError, SettingError):  # no record, or a device this machine lacks
        return devices.resolve("auto")
