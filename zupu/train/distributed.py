"""Data parallelism over processes and machines: PyTorch's DistributedDataParallel under torchrun.

`torchrun --nproc-per-node N -m zupu train ...` (or `zupu train --nproc N`, which starts torchrun) runs N copies
of the same training; `session` joins them into one process group (gloo on the CPU, NCCL on GPUs) from the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). Every rank builds the same model
from the same seed and computes the same whole batch, a pure function of the step, and trains on its own shard
of it (`zupu.train.trainer`); DDP averages the gradients, so each step is the step one process would take on
the whole batch and a run is reproducible for a given number of ranks. Rank 0 alone writes the run directory.

A rank that dies takes the job down: torchrun stops the others and exits non-zero with the failed rank named,
and the launcher turns that into one clear error (the last resume checkpoint is kept for `--resume`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from zupu.errors import SettingError, ZupuError
from zupu.train.threads import usable_cpus


class RankFailed(ZupuError):
    """A process of a data-parallel job failed, and the job with it."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes the run directory, logs and draws."""
        return self.rank == 0


def world() -> World:
    """This process's place in the job: from the process group if one is up, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: a CUDA device becomes the rank's own GPU (cuda:LOCAL_RANK) on its machine."""
    if device.type == "cuda" and launched():
        local, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local >= count:
            raise SettingError(f"rank {local} of this machine has no GPU of its own (cuda:{local}; the machine has "
                               f"{count}): start at most {count} processes per machine")
        return torch.device("cuda", local)
    return device


@contextmanager
def session(device: torch.device) -> Iterator[World]:
    """Join the process group torchrun describes (a no-op outside torchrun), yield this rank's World, leave it."""
    if not launched() or dist.is_initialized():
        yield world()
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def threads_per_rank(nproc: int) -> int:
    """The intra-op threads each of `nproc` ranks on this machine gets: its usable cores shared out, at least one."""
    return max(1, len(usable_cpus()) // nproc)


def run_torchrun(nproc: int, args: Sequence[str]) -> None:
    """`python -m torch.distributed.run --standalone --nproc-per-node nproc -m zupu ARGS` (one machine; for
    several, call torchrun with its rendezvous flags), each rank on its share of the usable cores."""
    if nproc < 1:
        raise SettingError(f"--nproc must be >= 1, got {nproc}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_rank(nproc))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "zupu", *args]
    code = subprocess.call(cmd, env=env)
    if code != 0:
        raise RankFailed(f"the {nproc}-process job stopped: a rank failed (torchrun exit code {code}; the failed "
                         "rank, its exit code or signal and its error are printed above). Fix the cause and run the "
                         "same command with --resume to continue from the last checkpoint")
