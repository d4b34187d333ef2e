"""The contract every recipe of every working member keeps, found through the registry (a new member's
recipes are covered with no edit here): trained at its `tiny` settings, a run directory

- names the member and recipe that made it in config.json (not the member whose class it saved);
- re-evaluates through `zupu eval DIR` to the metrics the run reported, within float tolerance;
- loads with `zupu.from_pretrained(DIR)` into the class it saved, which runs a forward on the recipe's
  `example` input;
- would run on a GPU: training and `zupu eval` go on under tests/device_check.py's `DeviceTags`, which raises
  where host and device tensors would meet on one (a batch never moved, a tensor made without `device=`, a CPU
  generator on device tensors, `.numpy()` of a device tensor), and the model keeps every tensor it holds in its
  parameters and buffers, which `.to(device)` moves.
"""

import json

import pytest
import torch
from device_check import DeviceTags, host_tensors_held
from torch import nn

import zupu
from zupu import create, registry
from zupu.checkpoint import load_model, member_of, save_model
from zupu.cli import main
from zupu.errors import CheckpointError
from zupu.train import launch
from zupu.train.threads import threads

RECIPES = [(m, r) for m in registry.members() if m.works for r in m.recipes().values()]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests share their machine with other work, where a second thread waits more than it computes (a tiny
    LeNet-5 run took 40 s on two threads beside a busy neighbour). A recipe's own `threads` cannot exceed this."""
    with threads(1):
        yield


@pytest.mark.parametrize(("member", "recipe"), RECIPES, ids=[f"{m.name}/{r.name}" for m, r in RECIPES])
def test_recipe_run_is_recorded_reevaluated_and_reloaded(member, recipe, tmp_path, capsys):
    assert recipe.tiny is not None, f"recipe {recipe.name!r} of {member.name} declares no tiny settings"
    with DeviceTags():
        launch.train(member.name, recipe.name, tmp_path, overrides=dict(recipe.tiny), device="cpu")
    reported = json.loads((tmp_path / "metrics.json").read_text())
    assert reported["metrics"]["device"] == "cpu"  # the model, batches and evaluation ran where asked
    entry = json.loads((tmp_path / "config.json").read_text())["zupu"]
    assert (reported["member"], reported["recipe"]) == (entry["member"], entry["recipe"]) == (member.name, recipe.name)

    capsys.readouterr()
    with DeviceTags():
        assert main(["eval", str(tmp_path)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["device"] == "cpu"  # where the run trained
    assert (evaluated["member"], evaluated["recipe"]) == (member.name, recipe.name)
    assert evaluated["metrics"], f"{recipe.name}'s evaluate returned no metrics"
    unreported = sorted(set(evaluated["metrics"]) - set(reported["metrics"]))
    assert not unreported, f"{recipe.name}'s evaluate returns {unreported}, which its train does not report"
    for name, value in evaluated["metrics"].items():
        assert value == pytest.approx(reported["metrics"][name], rel=1e-5, abs=1e-6), name

    model = zupu.from_pretrained(tmp_path)
    assert (type(model).__module__, type(model).__name__) == (entry["model_module"], entry["architecture"])
    assert host_tensors_held(model) == [], "tensors held outside the parameters and buffers stay on the host"
    with torch.no_grad():
        out = model(*recipe.example(recipe.settings(overrides=entry["settings"])))
    out = getattr(out, "logits", out)
    tensors = [t for t in (out if isinstance(out, tuple) else (out,)) if torch.is_tensor(t)]
    assert tensors and all(t.is_floating_point() and torch.isfinite(t).all() for t in tensors)


def test_every_member_has_an_era_of_the_tree():
    for m in registry.members():
        assert m.era in registry.ERAS, m.name


def test_a_member_may_be_a_package():
    unet = type("UNet", (nn.Module,), {"__module__": "zupu.models.diffusion.unet"})()
    assert member_of(unet).name == "diffusion"
    elsewhere = type("Net", (nn.Module,), {"__module__": "tests.zupu.models.gpt"})()
    with pytest.raises(Exception, match="not a zupu member's model"):
        member_of(elsewhere)


def _rewrite_entry(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg["zupu"].update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del cfg["zupu"][key]
    (path / "config.json").write_text(json.dumps(cfg))


def test_runs_saved_before_entries_named_the_module_still_load(tmp_path):
    """An entry without model_module loads from its member's model module, as before."""
    model = create("lenet", "tiny")
    save_model(model, tmp_path, {"recipe": "lenet5-mnist"})
    _rewrite_entry(tmp_path, model_module=None)
    loaded = load_model(tmp_path)
    assert type(loaded) is type(model)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_model_module_outside_zupu_models_is_refused(tmp_path):
    save_model(create("lenet", "tiny"), tmp_path, {"recipe": "lenet5-mnist"})
    _rewrite_entry(tmp_path, model_module="os")
    with pytest.raises(CheckpointError, match="not a zupu model module"):
        load_model(tmp_path)
    _rewrite_entry(tmp_path, model_module="zupu.models.nothing")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path)
