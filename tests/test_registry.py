"""Walk every registered member: build its tiny preset, save, load, and compare."""

import dataclasses

import pytest
import torch

from zupu import create, registry
from zupu.checkpoint import load_into, load_model, save_model
from zupu.errors import CheckpointError, MemberNotReady, UnknownMember

WORKING = [m for m in registry.members() if m.works]


def test_names_are_unique_and_parents_exist():
    names = [m.name for m in registry.members()]
    assert len(names) == len(set(names))
    for m in registry.members():
        assert set(m.parents) <= set(names), m.name


def test_unknown_and_planned_members():
    with pytest.raises(UnknownMember, match="did you mean perceptron"):
        registry.get("perseptron")
    planned = [m for m in registry.members() if not m.works]
    if planned:
        with pytest.raises(MemberNotReady, match="planned"):
            planned[0].recipes()


@pytest.mark.parametrize("member", WORKING, ids=lambda m: m.name)
def test_member_builds_saves_and_loads(member, tmp_path):
    recipes = member.recipes()
    assert recipes, member.name
    for r in recipes.values():
        assert r.milestone.metric and r.summary
        dataclasses.asdict(r.settings(quick=True))  # quick settings are valid settings
    if not member.model:
        return
    model = create(member.name, "tiny")
    save_model(model, tmp_path, {"recipe": "test"})
    loaded = load_model(tmp_path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    model = create("backprop-mlp", "tiny")
    state = model.state_dict()
    state["weights.9"] = state.pop("weights.1")
    state["biases.0"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as e:
        load_into(model, state, "ckpt")
    msg = str(e.value)
    assert "missing keys ['weights.1']" in msg and "unexpected keys ['weights.9']" in msg
    assert "biases.0: checkpoint (7,) vs model (3,)" in msg


def test_unknown_preset_and_field():
    with pytest.raises(Exception, match="preset of perceptron"):
        create("perceptron", "huge")
    with pytest.raises(Exception, match="config field of perceptron"):
        create("perceptron", "tiny", n_hidden=3)
