"""Precision follows the hardware: bfloat16 only where the CPU multiplies it natively (tested on both kinds by
making the hardware answer either way), float32 Newton-Schulz for Muon where it does not."""

import pytest
import torch

from zupu.errors import SettingError
from zupu.recipes.gpt import CharSettings, ShakespeareChar, make_optimizer, train_step
from zupu.train import precision
from zupu.train.optim import orthogonalise


@pytest.mark.parametrize("native", [True, False])
def test_auto_asks_the_hardware(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device_type="cpu": native)
    assert precision.resolve("auto") == ("bf16" if native else "fp32")
    assert precision.resolve("bf16") == "bf16" and precision.resolve("fp32") == "fp32"  # asked for, kept
    with pytest.raises(SettingError, match="precision 'fp16'; choose auto, bf16, fp32"):
        precision.resolve("fp16")


def test_only_cpus_and_cuda_devices_are_asked():
    assert precision.resolve("auto", "mps") == "fp32"  # no other device is assumed to multiply bf16 natively


@pytest.mark.parametrize("capable", [True, False])
def test_a_gpu_is_asked_its_capability(monkeypatch, capable):
    """On CUDA, "auto" is bfloat16 exactly where the GPU has it (Ampere and later), as on a CPU with AVX-512 BF16:
    the GPT recipes' autocast takes the batch's device type, so the same setting means the same on both."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: capable)
    assert precision.resolve("auto", "cuda") == ("bf16" if capable else "fp32")


@pytest.mark.parametrize("native", [True, False])
def test_gpt_recipe_on_either_kind_of_cpu(monkeypatch, native):
    """The shipped recipe (precision auto): autocast and Muon's bfloat16 Newton-Schulz only on native hardware;
    elsewhere exactly the float32 loss and a float32 iteration."""
    monkeypatch.setattr(precision, "native_bf16", lambda device_type="cpu": native)
    torch.manual_seed(0)
    s = CharSettings(n_layer=1, block_size=16)
    assert s.precision == "auto"
    model = ShakespeareChar().build(s)
    batch = torch.randint(0, 65, (2, 16)), torch.randint(0, 65, (2, 16))
    loss = train_step(model, s)(batch)["loss"]
    assert torch.equal(loss, model.loss(*batch)) is not native
    muon = [g for g in make_optimizer(model, s).param_groups if g["muon"]]
    assert muon and all(g["ns_dtype"] == ("bfloat16" if native else "float32") for g in muon)


def test_newton_schulz_in_float32_is_the_same_iteration_more_exactly():
    torch.manual_seed(0)
    mats = [torch.randn(16, 48), torch.randn(48, 16), torch.randn(16, 48)]
    args = ((3.4445, -4.7750, 2.0315), 5, 1e-7)
    exact = orthogonalise([m.double() for m in mats], *args, dtype=torch.float64)
    fp32 = orthogonalise(mats, *args, dtype=torch.float32)
    bf16 = orthogonalise(mats, *args)  # torch.optim.Muon's own (its equality with torch is in test_trainer.py)
    assert all(x.dtype == torch.float32 for x in fp32) and all(x.dtype == torch.bfloat16 for x in bf16)
    for e, f, b in zip(exact, fp32, bf16, strict=True):
        err32, err16 = (f.double() - e).abs().max().item(), (b.double() - e).abs().max().item()
        assert err32 < 1e-5 < err16 < 0.1  # same iteration: float32 follows float64, bfloat16 within its precision
