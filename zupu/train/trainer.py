"""One training loop for every member.

The recipe supplies `step(batch) -> {"loss": tensor, ...}` (scalars to log); the Trainer does the rest: zeroing and
clipping gradients, the optimiser and schedule, periodic evaluation with early stopping, the curve
in metrics.jsonl, a progress bar, and an atomic resume checkpoint from which `--resume` continues
bit-exactly (batches are a pure function of the step; RNG, optimiser and schedule state are saved).

With `workers` > 1 each batch is split along its first dimension into that many shards whose gradients
are computed side by side, one thread and one intra-op thread each (data parallelism over the CPU's
cores: the small matmuls of a small model split badly inside one matmul, whole shards do not). The
shards' gradients are summed in a fixed order, so runs stay deterministic; the step function must then
return a mean loss over its shard and draw no random numbers (threads would share the generator).

Under torchrun (`zupu.train.distributed`) the step runs inside DistributedDataParallel: every rank takes the
whole batch of the step and computes its own consecutive shard, DDP averages the gradients (each rank's loss is
weighted by its shard's rows, so unequal shards still give the whole batch's mean), and the logged scalars are
summed over ranks each step, so the curve is the one a single process would log. The thread `workers` are then
one per rank. The resume checkpoint (written by rank 0) holds every rank's random state.

Batches are moved to the model's device (`zupu.train.device.to_device`) as they are taken.

`fit` also sets glibc's malloc, once per process, to keep freed memory for the next step
(`zupu.train.threads.keep_freed_memory`: a step otherwise faults its activations' pages back in).

A member whose paper defines its own update (the perceptron rule, hand-written backprop deltas)
writes `param.grad` itself and returns a loss that needs no backward; the optimiser step then
applies it (plain SGD with lr = the paper's learning rate reproduces those rules exactly).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as st_save
from torch import nn

from zupu.atomic import write_bytes
from zupu.checkpoint import load_into
from zupu.errors import CheckpointError, SettingError
from zupu.progress import progress
from zupu.train import device as devices
from zupu.train.device import to_device
from zupu.train.distributed import world
from zupu.train.run import Run
from zupu.train.threads import keep_freed_memory, parallel

Batch = Any
StepFn = Callable[[Batch], dict[str, torch.Tensor]]
EvalFn = Callable[[], dict[str, float]]


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        step: StepFn,
        batches: Callable[[int], Batch],
        optimizer: torch.optim.Optimizer,
        max_steps: int,
        run: Run | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        evaluate: EvalFn | None = None,
        eval_every: int = 0,
        log_every: int = 50,
        grad_clip: float | None = None,
        monitor: str | None = None,
        mode: str = "min",
        patience: int | None = None,
        checkpoint_every: int = 0,
        # called as cb(step, trainer) after each step; one with state_dict() / load_state_dict() (str -> tensor)
        # has that state saved in the resume checkpoint
        callbacks: tuple[Callable[[int, Trainer], None], ...] = (),
        desc: str = "train",
        workers: int = 1,
    ):
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.model, self.step_fn, self.batches, self.optimizer = model, step, batches, optimizer
        self.scheduler, self.max_steps, self.run = scheduler, max_steps, run
        self.evaluate, self.eval_every, self.log_every = evaluate, eval_every, max(1, log_every)
        self.grad_clip, self.monitor, self.mode, self.patience = grad_clip, monitor, mode, patience
        self.checkpoint_every, self.callbacks, self.desc = checkpoint_every, callbacks, desc
        self.world = world()
        self.workers = 1 if self.world.size > 1 else workers  # under DDP the ranks are the data parallelism
        self.device = devices.of(model)
        self.ddp: nn.Module | None = None
        if self.world.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            # DDP runs the step itself, so its hooks see the forward that the step does on the model's
            # parameters; static_graph: a step may leave some parameters out (a pooler) or use one twice (a
            # tied head), the same ones every step, which DDP then learns once instead of searching each step
            self.ddp = DistributedDataParallel(_Step(model, step), device_ids=[self.device] if self.device.type ==
                                               "cuda" else None, static_graph=True)
        self.step = 0
        self.best: float | None = None
        self.bad_evals = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_eval: dict[str, float] = {}
        self.stopped_early = False
        self.window: dict[str, torch.Tensor] = {}  # sums of the logged scalars since the last log line
        self.window_n = 0

    # -- evaluation and early stopping -------------------------------------------------------
    def _evaluate(self) -> dict[str, float]:
        if self.evaluate is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in self.evaluate().items()}
        self.model.train(was_training)
        self.last_eval = metrics
        if self.run is not None:
            self.run.log(self.step, **metrics)
        if self.monitor is not None:
            if self.monitor not in metrics:
                raise KeyError(f"monitor {self.monitor!r} is not among the eval metrics {sorted(metrics)}")
            value = metrics[self.monitor]
            if self.best is None or self._better(value, self.best):
                self.best, self.bad_evals = value, 0
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                self.bad_evals += 1
        return metrics

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    # -- resume checkpoints ------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.run is None:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt = self.optimizer.state_dict()
        for pid, state in opt["state"].items():
            for name, value in state.items():
                tensors[f"optim.{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        for i, cb in enumerate(self.callbacks):  # a callback with state (EMA's average) continues on --resume
            if hasattr(cb, "state_dict"):
                tensors.update({f"callback.{i}.{k}": v for k, v in cb.state_dict().items()})
        for rank, states in enumerate(self._gather_rng()):
            tensors.update({(k if rank == 0 else f"{k}.rank{rank}"): v for k, v in states.items()})
        tensors.update({f"window.{k}": v for k, v in self.window.items()})
        meta = {
            "step": self.step,
            "window_n": self.window_n,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "param_groups": opt["param_groups"],
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "last_eval": self.last_eval,
        }
        if not self.world.main:
            return
        blob = st_save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
                       metadata={"trainer": json.dumps(meta, default=repr)})
        write_bytes(self.run.resume_path, blob)

    def _gather_rng(self) -> list[dict[str, torch.Tensor]]:
        """The random states of every rank, rank 0's first (a collective under DDP: every rank calls it)."""
        states = {"rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.world.size == 1:
            return [states]
        gathered: list[dict[str, torch.Tensor] | None] = [None] * self.world.size
        dist.all_gather_object(gathered, states)
        return gathered  # type: ignore[return-value]

    def load_checkpoint(self) -> bool:
        if self.run is None or not self.run.resume_path.exists():
            return False
        path = self.run.resume_path
        try:
            tensors = load_file(path)
            with safe_open(path, "pt") as f:
                meta = json.loads(f.metadata()["trainer"])
        except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as e:
            raise CheckpointError(
                f"{path} is not a readable resume checkpoint ({e}); start again without --resume") from None

        load_into(self.model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, str(path))
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        if self.scheduler is not None and meta["scheduler"] is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        self.best_state = best or None
        for i, cb in enumerate(self.callbacks):
            if hasattr(cb, "load_state_dict"):
                prefix = f"callback.{i}."
                cb.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        suffix = f".rank{self.world.rank}" if f"rng.rank{self.world.rank}" in tensors else ""  # same ranks as saved
        torch.set_rng_state(tensors[f"rng{suffix}"])
        if self.device.type == "cuda" and f"cuda_rng{suffix}" in tensors:
            torch.cuda.set_rng_state(tensors[f"cuda_rng{suffix}"], self.device)
        self.window = {k[7:]: v for k, v in tensors.items() if k.startswith("window.")}
        self.window_n = meta["window_n"]
        self.step, self.best, self.bad_evals = meta["step"], meta["best"], meta["bad_evals"]
        self.last_eval = meta["last_eval"]
        if self.world.main:
            self.run.truncate(self.step)
        return True

    # -- data parallelism over threads --------------------------------------------------------
    def _sharded_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The step on `workers` shards of the batch at once; the gradients and the logged scalars are the
        shards' averages weighted by their rows, i.e. those of the whole batch."""
        shards = _split(batch, self.workers)
        rows = [_rows(shard) for shard in shards]
        params = [p for p in self.model.parameters() if p.requires_grad]

        def work(shard: Batch, weight: float):
            def run():
                out = self.step_fn(shard)
                loss = out["loss"] * weight
                return out, torch.autograd.grad(loss, params, allow_unused=True) if loss.requires_grad else ()
            return run

        results = parallel([work(shard, n / sum(rows)) for shard, n in zip(shards, rows, strict=True) if n])
        for i, p in enumerate(params):
            grads = [g[i] for _, g in results if g and g[i] is not None]
            if grads:
                p.grad = sum(grads[1:], grads[0])
        weights = [n / sum(rows) for n in rows if n]
        return {k: sum(out[k].detach() * w for (out, _), w in zip(results, weights, strict=True))
                for k, v in results[0][0].items() if torch.is_tensor(v) and v.numel() == 1}

    # -- data parallelism over processes ------------------------------------------------------
    def _ddp_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """This rank's shard of the step's batch through DDP; returns the whole batch's logged scalars."""
        assert self.ddp is not None
        total = _rows(batch)
        if total < self.world.size:
            raise SettingError(f"a batch of {total} rows cannot be shared by {self.world.size} processes; use a "
                               "batch at least that large, or fewer processes")
        mine = to_device(_split(batch, self.world.size)[self.world.rank], self.device)
        weight = _rows(mine) / total  # this shard's share of the batch
        out = self.ddp(mine)
        loss = out.get("loss")
        if loss is not None and loss.requires_grad:
            # DDP averages over ranks: scaling by size * share makes that the row-weighted mean of the shards
            (loss * (self.world.size * weight)).backward()
        names = [k for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1]
        if not names:
            return {}
        scalars = torch.stack([out[k].detach().float().reshape(()) * weight for k in names])
        dist.all_reduce(scalars)
        return dict(zip(names, scalars, strict=True))

    def _check_same_step(self) -> None:
        """Every rank must start at the same step: a rank on another machine that cannot see the resume
        checkpoint would otherwise start over beside the others."""
        steps = [torch.zeros((), dtype=torch.long, device=self.device) for _ in range(self.world.size)]
        dist.all_gather(steps, torch.tensor(self.step, device=self.device))
        if len({int(s) for s in steps}) > 1:
            raise CheckpointError(f"--resume: the ranks start at steps {[int(s) for s in steps]}: some could not "
                                  f"read {self.run.resume_path if self.run else 'the checkpoint'}; put --out on a "
                                  "file system every machine sees")

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train to `max_steps` (or early stop); return the last eval metrics plus `steps`."""
        keep_freed_memory()
        if self.run is not None and self.run.resume:
            self.load_checkpoint()
        if self.ddp is not None:
            self._check_same_step()
        self.model.train()
        if self.evaluate is not None and self.eval_every and self.step == 0:
            self._evaluate()
        bar = progress(total=self.max_steps, initial=self.step, desc=self.desc, unit="step")
        try:
            while self.step < self.max_steps and not self._should_stop():
                self.optimizer.zero_grad(set_to_none=True)
                batch = self.batches(self.step)
                if self.ddp is not None:
                    out = self._ddp_step(batch)
                elif self.workers > 1:
                    out = self._sharded_step(to_device(batch, self.device))
                else:
                    batch = to_device(batch, self.device)
                    out = self.step_fn(batch)
                    loss = out.get("loss")
                    if loss is not None and loss.requires_grad:
                        loss.backward()
                if self.grad_clip:
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                self.step += 1
                detached = {k: v.detach() for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
                self.window = {k: self.window[k] + v if k in self.window else v for k, v in detached.items()}
                self.window_n += 1
                bar.update(1)
                if self.step % self.log_every == 0 or self.step == self.max_steps:
                    logged = {k: v.item() / self.window_n for k, v in self.window.items()}
                    logged["lr"] = self.optimizer.param_groups[0]["lr"]
                    if self.run is not None:
                        self.run.log(self.step, **logged)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in {**logged, **self.last_eval}.items() if k != "lr"})
                    self.window, self.window_n = {}, 0
                for cb in self.callbacks:  # before the checkpoint, which holds their state after this step
                    cb(self.step, self)
                if self.eval_every and self.step % self.eval_every == 0 and self.step < self.max_steps:
                    self._evaluate()
                if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            if self.ddp is None:  # under DDP saving is collective, and the other ranks may be gone
                self.save_checkpoint()
            raise
        finally:
            bar.close()
        self.stopped_early = self._should_stop() and self.step < self.max_steps
        final = self._evaluate() if self.evaluate is not None else {}
        if self.best_state is not None and self.best is not None and self._better(self.best, final[self.monitor]):
            self.model.load_state_dict(self.best_state)  # the last weights are worse than the best seen
            final = self._evaluate()
        return {**final, "steps": self.step}


class _Step(nn.Module):
    """The step function as a module, so that DDP wraps the forward the step does (its hooks need that)."""

    def __init__(self, model: nn.Module, step: StepFn):
        super().__init__()
        self.model, self.step = model, step

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.step(batch)


def _split(batch: Batch, n: int) -> list[Batch]:
    """`n` consecutive shards of a batch along the first dimension: a tensor, or a tuple/list/dict of them."""
    if torch.is_tensor(batch):
        return list(torch.tensor_split(batch, n))
    if isinstance(batch, dict):
        parts = {k: _split(v, n) for k, v in batch.items()}
        return [{k: v[i] for k, v in parts.items()} for i in range(n)]
    if isinstance(batch, (tuple, list)):
        parts = [_split(v, n) for v in batch]
        return [type(batch)(v[i] for v in parts) for i in range(n)]
    raise TypeError(f"cannot split a batch of type {type(batch).__name__} over workers; "
                    "use tensors, or a tuple, list or dict of them")


def _rows(batch: Batch) -> int:
    while not torch.is_tensor(batch):
        batch = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return batch.size(0)
