"""Threads follow the machine: the CPUs the process may use and what other work leaves free of them, never a
count fixed for an idle box; the run records what it chose."""

import json
import os
import subprocess
import sys

import pytest
import torch

from zupu.train import launch, precision
from zupu.train import threads as th


@pytest.mark.parametrize(("usable", "busy", "expected"), [
    (2, 0.0, 2), (2, 0.1, 2), (2, 0.5, 1), (2, 1.0, 1), (2, 2.0, 1), (8, 3.0, 5), (1, 0.0, 1), (4, 0.8, 3)])
def test_a_core_taken_by_other_work_is_left_to_it(usable, busy, expected):
    assert th.free_cores(usable, busy) == expected


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs CPU affinity (Linux)")
def test_usable_cpus_are_the_affinity_not_the_machine():
    mine = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(mine)})
        assert th.usable_cpus() == [min(mine)]
        assert th.auto_threads() == 1
    finally:
        os.sched_setaffinity(0, mine)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads Linux's per-CPU counters")
def test_a_spinning_process_shows_as_a_busy_cpu():
    cpu = min(os.sched_getaffinity(0))
    idle_before = th.busy_cpus([cpu])
    spin = (f"import os, sys, time; os.sched_setaffinity(0, {{{cpu}}}); print('spinning', flush=True); "
            "end = time.perf_counter() + 5\nwhile time.perf_counter() < end: pass")
    proc = subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "spinning"  # pinned and running before we measure
        busy = th.busy_cpus([cpu], 0.5)
    finally:
        proc.kill()
        proc.wait()
    assert busy > 0.6 and 0.0 <= idle_before <= 1.0


@pytest.mark.parametrize(("asked", "free", "expected"), [(0, 2, 2), (0, 1, 1), (2, 1, 1), (2, 2, 2), (1, 2, 1)])
def test_a_recipe_asks_and_the_free_cores_cap(monkeypatch, asked, free, expected):
    monkeypatch.setattr(launch, "auto_threads", lambda: free)
    settings = type("S", (), {"threads": asked})()
    assert launch.recipe_threads(settings) == expected
    assert launch.recipe_threads(object()) == free  # no field: the free cores


@pytest.mark.parametrize("native", [True, False])
def test_the_gpt_run_records_what_the_machine_chose(monkeypatch, tmp_path, native):
    monkeypatch.setattr(launch, "auto_threads", lambda: 1)
    monkeypatch.setattr(precision, "native_bf16", lambda device_type="cpu": native)
    tiny = {"steps": 2, "warmup": 1, "n_layer": 1, "n_embd": 32, "n_head": 2, "batch_size": 4, "eval_tokens": 1024,
            "samples": 1, "sample_tokens": 5}
    before = torch.get_num_threads()
    launch.train("gpt", "shakespeare-char", out=tmp_path, overrides=tiny)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert (metrics["precision"], metrics["threads"], metrics["workers"]) == ("bf16" if native else "fp32", 1, 1)
    assert torch.get_num_threads() == before  # restored for the next recipe in the same process
