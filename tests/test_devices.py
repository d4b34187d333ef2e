"""The device check (tests/device_check.py) finds, on a CPU, what would break on a GPU; tests/test_contract.py
runs every recipe's tiny training and `zupu eval` under it. Here: it catches planted bugs (which the CPU alone
runs without complaint) and passes their fixes."""

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from device_check import DeviceTags, HostDeviceMix, host_tensors_held
from torch import nn

import zupu.models.gpt
from zupu.train import launch
from zupu.train.batches import TensorBatches
from zupu.train.metrics import accuracy
from zupu.train.threads import threads
from zupu.train.trainer import Trainer


class Positions(nn.Module):
    """x + its position: `torch.arange(T)` with the device (right) or without it (the bug)."""

    def __init__(self, on_device: bool):
        super().__init__()
        self.on_device = on_device
        self.scale = nn.Parameter(torch.ones(()))
        self.proj = nn.Linear(5, 5)

    def forward(self, x):  # (B, T)
        t = x.size(1)
        pos = torch.arange(t, device=x.device) if self.on_device else torch.arange(t)
        return self.proj(self.scale * x + pos)  # (B, T)


def _fit(model, step=None):
    x = torch.randn(8, 5)
    step = step or (lambda batch: {"loss": model(batch[0]).square().mean()})
    return Trainer(model, step, TensorBatches(x, batch_size=4), torch.optim.AdamW(model.parameters(), lr=0.1),
                   max_steps=2, grad_clip=1.0).fit()


def _on_device(model):
    return model.to("cpu")  # what launch does with the run's device: under the check, a move


def test_a_forward_that_makes_its_positions_on_the_host_is_caught():
    _fit(Positions(on_device=False))  # on the CPU alone the bug is invisible
    with DeviceTags(), pytest.raises(HostDeviceMix, match="arange"):
        _fit(_on_device(Positions(on_device=False)))
    with DeviceTags():
        _fit(_on_device(Positions(on_device=True)))


def test_a_step_that_makes_its_targets_on_the_host_is_caught():
    with DeviceTags():
        model = _on_device(Positions(on_device=True))
        with pytest.raises(HostDeviceMix, match=r"meets a host tensor \(4, 5\)"):
            _fit(model, lambda batch: {"loss": F.mse_loss(model(batch[0]), torch.zeros(batch[0].shape))})
        _fit(model, lambda batch: {"loss": F.mse_loss(model(batch[0]), batch[0].new_zeros(batch[0].shape))})
        _fit(model, lambda batch: {"loss": model(batch[0]).mean() * torch.tensor(2.0)})  # a CPU scalar is fine


def test_an_unmoved_test_set_a_cpu_generator_and_numpy_of_a_device_tensor_are_caught():
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    with DeviceTags():
        model = _on_device(Positions(on_device=True))
        with pytest.raises(HostDeviceMix, match="host tensor"):
            model(x)
        model(x.to("cpu"))
        assert 0 <= accuracy(model, x, y) <= 1  # moves its chunks
        g = torch.Generator().manual_seed(0)
        out = model(x.to("cpu"))
        with pytest.raises(HostDeviceMix, match="CPU generator"):
            torch.bernoulli(out.sigmoid(), generator=g)
        with pytest.raises(HostDeviceMix, match="host tensor"):  # device= does not move a CPU generator's draw
            out + torch.randn(out.shape, generator=g, device=out.device)
        out + torch.randn(out.shape, generator=g).to(out.device)
        with pytest.raises(HostDeviceMix, match="numpy"):
            zupu_numpy = types.FunctionType((lambda t: t.numpy()).__code__, {"__name__": "zupu.example"})
            zupu_numpy(out.detach())
        assert isinstance(out.detach().cpu().numpy(), np.ndarray)
        model.cpu()  # figures read the weights on the host
        model(x)


def test_a_real_recipe_with_a_planted_bug_fails_the_check(monkeypatch, tmp_path):
    """GPT's forward with its position ids made without the device (what `torch.arange(T)` in a forward is)."""

    def arange(*args, device=None, **kwargs):
        return torch.arange(*args, **kwargs)

    monkeypatch.setattr(zupu.models.gpt, "torch", types.SimpleNamespace(**{**vars(torch), "arange": arange}))
    tiny = launch.registry.get("gpt").recipe("shakespeare-char").tiny
    with threads(1), DeviceTags(), pytest.raises(HostDeviceMix, match="arange|host tensor"):
        launch.train("gpt", "shakespeare-char", tmp_path, overrides={**tiny, "steps": 1}, device="cpu")


def test_tensors_a_module_holds_outside_its_buffers_are_found():
    model = Positions(on_device=True)
    assert host_tensors_held(model) == []
    model.table = torch.arange(4)  # `.to(device)` would leave this behind
    assert host_tensors_held(model) == ["Positions.table"]


GPU_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def _gpu_bench(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GPU_BENCH.parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(GPU_BENCH), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_the_gpu_benchmark_parses_and_says_when_there_is_no_gpu(tmp_path):
    """benchmarks/gpu.py is what a lent GPU would run; here it must at least start, and refuse to measure."""
    out = _gpu_bench("--help")
    assert out.returncode == 0 and "--smoke" in out.stdout
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: run the benchmark itself")
    out = _gpu_bench(str(tmp_path), "--out", str(tmp_path / "RESULTS.md"))
    assert out.returncode == 0 and "no CUDA GPU on this machine" in out.stdout
    assert not (tmp_path / "RESULTS.md").exists()


@pytest.mark.skipif(not os.environ.get("ZUPU_NANOGPT"), reason="set ZUPU_NANOGPT to a nanoGPT checkout")
def test_the_gpu_benchmark_runs_its_code_on_tiny_shapes():
    """`--smoke`: training steps of zupu's GPT and nanoGPT's, and generation against transformers with the first
    tokens checked equal, on tiny shapes on the CPU; nothing written."""
    out = _gpu_bench(os.environ["ZUPU_NANOGPT"], "--smoke", "--steps", "2", "--rounds", "1", "--warmup", "1",
                     "--new", "4", "--batch", "2", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "zupu / nanoGPT training speed" in out.stdout and "nothing written" in out.stdout


def test_zupu_generate_and_draw_keep_to_their_device(tmp_path, capsys):
    """`zupu generate --device` and `zupu draw --device` (class-conditional, with image-to-image and inpainting)
    under the check: the prompt, noise, labels, start image and mask join the model; the output is unchanged."""
    import dataclasses

    from PIL import Image

    from zupu import create, registry
    from zupu.apps.draw import draw
    from zupu.checkpoint import save_model
    from zupu.cli import main
    from zupu.tokenizers import CharTokenizer

    tok = CharTokenizer.from_text("the quick brown fox jumps over the lazy dog\n")
    torch.manual_seed(0)
    save_model(create("gpt", "tiny", vocab_size=tok.vocab_size, n_positions=32).eval(), tmp_path / "gpt",
               {"recipe": "test"})
    tok.save(tmp_path / "gpt")
    args = ["generate", str(tmp_path / "gpt"), "--prompt", "the ", "--max-new-tokens", "12", "--seed", "3"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    with DeviceTags():
        assert main([*args, "--device", "cpu"]) == 0
    assert capsys.readouterr().out == plain

    recipe = registry.get("diffusion").recipe("fashion-ddpm")
    s = recipe.settings(overrides=recipe.tiny)
    torch.manual_seed(0)
    save_model(recipe.build(s), tmp_path / "ddpm", {"member": "diffusion", "recipe": recipe.name, "seed": 0,
                                                    "settings": dataclasses.asdict(s)})
    side = s.image_size
    Image.fromarray(np.full((side, side), 200, np.uint8), mode="L").save(tmp_path / "init.png")
    Image.fromarray(np.tile(np.arange(side, dtype=np.uint8) * (255 // side), (side, 1)), mode="L").save(
        tmp_path / "mask.png")
    kw = dict(label="sneaker", steps=2, n=2, init=str(tmp_path / "init.png"), mask=str(tmp_path / "mask.png"))
    expected = draw(tmp_path / "ddpm", **kw)
    with DeviceTags():
        got = draw(tmp_path / "ddpm", device="cpu", **kw)
    assert torch.equal(got, expected)


def test_zupu_eval_scores_where_the_run_trained_or_where_it_can(tmp_path, capsys):
    import json

    from zupu.cli import main

    launch.train("mp-neuron", "logic", tmp_path, device="cpu")
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["device"] == "cpu"  # the device metrics.json records
    record = json.loads((tmp_path / "metrics.json").read_text())
    record["metrics"]["device"] = "cuda:7"  # trained on a machine with more GPUs than this one
    (tmp_path / "metrics.json").write_text(json.dumps(record))
    assert launch.evaluate(tmp_path)["device"] == str(launch.devices.resolve("auto"))
    assert launch.evaluate(tmp_path, "cpu")["device"] == "cpu"
