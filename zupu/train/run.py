"""A run directory: the curve (metrics.jsonl), final metrics (metrics.json), model, plots.

Layout (the contract `zupu train`/`zupu eval`/`zupu tour` rely on):
    config.json  model.safetensors  metrics.jsonl  metrics.json  *.png  [resume.safetensors]

Under data parallelism only rank 0 writes it. The other ranks get a Run with `writer=False`: what the recipe
writes (a tokenizer it reads back, samples) goes to a scratch directory of their own, removed at `close`, the
curve and the model are not written, and the resume checkpoint is read from the real directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from torch import nn

from zupu.atomic import write_json
from zupu.checkpoint import save_model
from zupu.errors import CheckpointError
from zupu.recipe import Milestone


def _clean(value: Any) -> Any:
    """JSON-safe numbers: NaN/inf become None rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


class Run:
    def __init__(self, out: str | Path, member: str, recipe: str, settings: Any, seed: int, resume: bool = False,
                 writer: bool = True):
        self.writer = writer
        self.out = Path(out) if writer else Path(tempfile.mkdtemp(prefix="zupu-rank-"))
        self.out.mkdir(parents=True, exist_ok=True)
        self.member, self.recipe, self.settings, self.seed, self.resume = member, recipe, settings, seed, resume
        self.metrics_path = self.out / "metrics.jsonl"
        self.resume_path = Path(out) / "resume.safetensors"
        self.started = time.perf_counter()
        if writer and not resume:
            for stale in (self.metrics_path, self.resume_path, self.out / "metrics.json"):
                stale.unlink(missing_ok=True)

    @property
    def meta(self) -> dict[str, Any]:
        """What made this run: config.json's zupu entry and run.json hold it."""
        return {"member": self.member, "recipe": self.recipe, "seed": self.seed,
                "settings": dataclasses.asdict(self.settings)}

    def write_meta(self) -> None:
        """run.json: what this run is, written at the start so --resume can keep its settings."""
        write_json(self.out / "run.json", self.meta)

    def meta_check(self) -> None:
        saved = json.loads((self.out / "run.json").read_text()) if (self.out / "run.json").exists() else {}
        if saved and (saved.get("member"), saved.get("recipe")) != (self.member, self.recipe):
            raise CheckpointError(
                f"--resume: {self.out} holds a {saved.get('member')} {saved.get('recipe')} run, "
                f"not {self.member} {self.recipe}")

    def log(self, step: int, **values: Any) -> None:
        """Append one point of the curve: `run.log(100, loss=0.3, val_acc=0.91)`."""
        if not self.writer:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **{k: _clean(v) for k, v in values.items()}}) + "\n")

    def history(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate(self, step: int) -> None:
        """Drop curve points after `step` (a resumed run will log them again)."""
        if not self.writer:
            return
        kept = [r for r in self.history() if r["step"] <= step]
        with open(self.metrics_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)

    def path(self, name: str) -> Path:
        return self.out / name

    def finish(self, model: nn.Module, metrics: dict[str, Any], milestone: Milestone) -> dict[str, Any]:
        """Save the model and metrics.json, draw the curve; return what metrics.json holds."""
        from zupu.train.plots import plot_history

        metrics = {k: _clean(v) for k, v in metrics.items()}
        result = {
            "member": self.member,
            "recipe": self.recipe,
            "seed": self.seed,
            "metrics": metrics,
            "milestone": milestone.judge(metrics),
            "seconds": round(time.perf_counter() - self.started, 2),
        }
        if not self.writer:
            return result
        save_model(model, self.out, self.meta)
        write_json(self.out / "metrics.json", result)
        curves = self.out / "curves.png"
        if not plot_history(self.history(), curves, f"{self.member} · {self.recipe}",
                            (milestone.metric, milestone.target)):
            curves.unlink(missing_ok=True)  # a stale curve from an earlier run in this directory
        self.resume_path.unlink(missing_ok=True)
        return result

    def close(self) -> None:
        """Remove a non-writing rank's scratch directory."""
        if not self.writer:
            shutil.rmtree(self.out, ignore_errors=True)
