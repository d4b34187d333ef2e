"""Devices and data parallelism: `--device`, and `zupu train --nproc 2` (torchrun, DDP over gloo) on the CPU.

The DDP runs train a tiny character GPT in float32 whose batches are a pure function of the step: two ranks
must log the losses one process logs on the same global batch, resume bit-exactly after a rank is killed, and
leave one run directory written by rank 0 alone.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from zupu.cli import main
from zupu.errors import SettingError
from zupu.models.gpt import GPT, GPTConfig
from zupu.recipes.gpt import CharSettings
from zupu.train import device as devices
from zupu.train import launch
from zupu.train.batches import RandomWindows, TensorBatches
from zupu.train.run import Run
from zupu.train.threads import threads
from zupu.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
STEPS = 60
# batch 9: shards of 5 and 4 rows, so the weighting of unequal shards is under test too
TINY_GPT = {"steps": STEPS, "warmup": 2, "n_layer": 1, "n_embd": 32, "n_head": 2, "batch_size": 9,
            "eval_tokens": 2048, "samples": 1, "sample_tokens": 10, "precision": "fp32", "log_every": 1,
            "checkpoint_every": 5}
SETS = [x for k, v in TINY_GPT.items() for x in ("--set", f"{k}={v}")]


def curve(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- devices --------------------------------------------------------------------------------------------

def test_device_choices_resolve_or_name_what_is_missing():
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(SettingError, match="'tpu'.*choose auto, cpu, cuda, cuda:N or mps"):
        devices.resolve("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SettingError, match="'cuda:1'.*no CUDA GPU"):
            devices.resolve("cuda:1")
    else:
        with pytest.raises(SettingError, match="cuda:99"):
            devices.resolve("cuda:99")


def test_unavailable_device_is_a_clear_cli_error(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["train", "perceptron", "--out", str(tmp_path), "--device", "cuda"]) == 2
    assert "device 'cuda': this machine has no CUDA GPU" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_trainer_moves_each_batch_to_the_models_device():
    """A GPT's loss, backward and optimiser step on the meta device (shapes, no numbers): host batches reach
    the model there, so nothing in the loop assumes the CPU. The callback stops it before a loss is read."""
    model = GPT(GPTConfig(vocab_size=11, n_positions=8, n_embd=16, n_layer=1, n_head=2)).to("meta")
    seen = []

    def step(batch):
        return {"loss": model.loss(*batch)}

    class Stop(Exception):
        pass

    def stop(i, trainer):
        raise Stop

    def watched(batch):
        seen.append({t.device.type for t in batch})
        return step(batch)

    batches = RandomWindows(torch.arange(100) % 11, 8, 4)
    with pytest.raises(Stop):
        Trainer(model, watched, batches, torch.optim.AdamW(model.parameters()), 3, log_every=100,
                callbacks=(stop,)).fit()
    assert seen == [{"meta"}]


def test_nested_batches_move_whole():
    Pair = collections.namedtuple("Pair", "ids labels")
    batch = {"x": (torch.zeros(2), [torch.ones(3)]), "n": 3, "pair": Pair(torch.zeros(1), "text")}
    moved = devices.to_device(batch, torch.device("meta"))
    assert moved["x"][0].is_meta and moved["x"][1][0].is_meta and moved["n"] == 3
    assert isinstance(moved["pair"], Pair) and moved["pair"].ids.is_meta and moved["pair"].labels == "text"


# -- data parallelism -------------------------------------------------------------------------------------

def test_a_recipe_that_cannot_shard_refuses_processes(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    with pytest.raises(SettingError, match="alphazero .* cannot be split over processes"):
        launch.train("alphazero", out=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_non_writing_rank_leaves_the_run_directory_alone(tmp_path):
    model = nn.Linear(2, 2)
    run = Run(tmp_path / "run", "perceptron", "x", CharSettings(), 0, writer=False)
    run.log(1, loss=0.5)
    with open(run.path("tokenizer.json"), "w") as f:  # what a recipe writes beside its run goes to scratch
        f.write("{}")
    from zupu.recipe import Milestone

    result = run.finish(model, {"loss": 0.5}, Milestone("loss", 1.0, higher_is_better=False))
    assert result["milestone"]["passed"]
    run.close()
    assert not (tmp_path / "run").exists() and not run.out.exists()


def _rank_pids(tag: str) -> dict[int, int]:
    """{rank: pid} of the torchrun workers started with ZUPU_TEST_TAG=tag (their environment names both)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (entry / "environ").read_text().split("\0") if "=" in kv)
        except OSError:
            continue
        if env.get("ZUPU_TEST_TAG") == tag and "RANK" in env and "TORCHELASTIC_RUN_ID" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


def _zupu(args: list[str], tmp: Path, tag: str = "") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZUPU_PROGRESS": "0", "ZUPU_TEST_TAG": tag, "TMPDIR": str(tmp)}
    return subprocess.Popen([sys.executable, "-m", "zupu", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """An uninterrupted 2-rank run, and one whose rank 1 is killed after its first checkpoint, started side by
    side (process start-up is most of their time)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("finds the ranks to kill through /proc")
    tmp = tmp_path_factory.mktemp("ddp")
    for name in ("scratch", "scratch-killed"):
        (tmp / name).mkdir()
    full, killed = tmp / "full", tmp / "killed"
    tag = f"zupu-ddp-{os.getpid()}"
    jobs = {"full": _zupu(["train", "gpt", "--out", str(full), "--nproc", "2", *SETS], tmp / "scratch"),
            "killed": _zupu(["train", "gpt", "--out", str(killed), "--nproc", "2", *SETS], tmp / "scratch-killed",
                            tag)}
    deadline = time.monotonic() + 240
    while not (killed / "resume.safetensors").exists():
        assert jobs["killed"].poll() is None, jobs["killed"].communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint from the 2-rank run"
        time.sleep(0.01)
    pids = _rank_pids(tag)
    assert sorted(pids) == [0, 1], pids
    for pid in pids.values():  # freeze both ranks so the run cannot finish meanwhile, then kill rank 1
        os.kill(pid, signal.SIGSTOP)
    os.kill(pids[1], signal.SIGKILL)
    os.kill(pids[0], signal.SIGCONT)
    outputs = {name: job.communicate(timeout=240) for name, job in jobs.items()}
    return {"tmp": tmp, "full": full, "killed": killed, "outputs": outputs,
            "codes": {name: job.returncode for name, job in jobs.items()}}


@pytest.mark.slow  # 2 jobs of 3 processes each (torchrun's agent and 2 ranks), then a third
def test_ddp_losses_equal_one_process_on_the_whole_batch(ddp_runs, tmp_path):
    assert ddp_runs["codes"]["full"] == 0, ddp_runs["outputs"]["full"][1][-3000:]
    with threads(1):
        launch.train("gpt", out=tmp_path, overrides=TINY_GPT)
    ddp, single = curve(ddp_runs["full"]), curve(tmp_path)
    assert [p["step"] for p in ddp] == [p["step"] for p in single]
    first = [(a["loss"], b["loss"]) for a, b in zip(ddp[:10], single[:10], strict=True)]
    assert max(abs(a - b) for a, b in first) < 1e-5, first
    assert json.loads((ddp_runs["full"] / "metrics.json").read_text())["metrics"]["processes"] == 2


@pytest.mark.slow  # 2 jobs of 3 processes each (torchrun's agent and 2 ranks), then a third
def test_ddp_run_directory_is_written_once_by_rank_zero(ddp_runs):
    full = ddp_runs["full"]
    assert [p["step"] for p in curve(full)][:STEPS] == list(range(1, STEPS + 1))  # each step logged once
    assert sorted(p.name for p in full.iterdir()) == ["config.json", "curves.png", "metrics.json", "metrics.jsonl",
                                                      "model.safetensors", "run.json", "samples.txt",
                                                      "tokenizer.json"]
    assert not list((ddp_runs["tmp"] / "scratch").glob("zupu-rank-*"))  # rank 1's scratch directory is gone
    assert ddp_runs["outputs"]["full"][0].count("milestone val_loss") == 1  # rank 0 alone reports


@pytest.mark.slow  # 2 jobs of 3 processes each (torchrun's agent and 2 ranks), then a third
def test_killed_rank_stops_the_job_and_ddp_resumes_bit_exactly(ddp_runs):
    killed = ddp_runs["killed"]
    assert ddp_runs["codes"]["killed"] != 0
    err = ddp_runs["outputs"]["killed"][1]
    assert "zupu: error: the 2-process job stopped: a rank failed" in err and "--resume" in err, err[-3000:]
    assert not (killed / "model.safetensors").exists()
    job = _zupu(["train", "gpt", "--out", str(killed), "--nproc", "2", "--resume"], ddp_runs["tmp"] / "scratch-killed")
    out, err = job.communicate(timeout=240)
    assert job.returncode == 0, err[-3000:]
    assert curve(killed) == curve(ddp_runs["full"])  # every logged loss and learning rate identical
    assert same_weights(killed, ddp_runs["full"])


def test_nproc_below_one_is_refused(capsys):
    assert main(["train", "gpt", "--nproc", "0"]) == 2
    assert "--nproc must be >= 1" in capsys.readouterr().err


def test_nproc_short_form_passes_every_train_option():
    from zupu.cli import build_parser, train_argv

    args = build_parser().parse_args(["train", "gpt", "--nproc", "2", "--out", "o", "--set", "steps=3", "--quick",
                                      "--resume", "--device", "cpu", "--seed", "4", "--recipe", "tang-poems"])
    assert train_argv(args) == ["train", "gpt", "--seed", "4", "--device", "cpu", "--recipe", "tang-poems",
                                "--out", "o", "--set", "steps=3", "--quick", "--resume"]


def test_tensor_batches_shard_in_rank_order():
    from zupu.train.trainer import _split

    batch = TensorBatches(torch.arange(10), batch_size=5, seed=1)(0)
    assert torch.equal(torch.cat([_split(batch, 2)[r][0] for r in range(2)]), batch[0])
