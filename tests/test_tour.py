"""The tour's mechanics: which members run, its exit status, continuing a full tour, the quick budget."""

from __future__ import annotations

import json

import pytest

from zupu import registry
from zupu.cli import main
from zupu.errors import UnknownMember
from zupu.recipe import Milestone
from zupu.tour import QUICK_BUDGET_SECONDS, _state, planned_seconds, select, side_by_side, usable_cores


def test_only_and_skip_select_members_and_unknown_names_fail_at_once(capsys):
    assert [m.name for m in select(only=["lenet", "mp-neuron"])] == ["mp-neuron", "lenet"]  # by year
    every = [m.name for m in select()]
    assert every == [m.name for m in sorted((m for m in registry.members() if m.works), key=lambda m: m.year)]
    assert [m.name for m in select(skip=["lenet"])] == [n for n in every if n != "lenet"]
    with pytest.raises(UnknownMember, match="did you mean lenet"):
        select(skip=["lenett"])
    assert main(["tour", "--quick", "--only", "mp-neuron", "--skip", "gtp"]) == 2
    assert "did you mean gpt" in capsys.readouterr().err


def test_usable_cores_are_the_affinity_mask_not_the_machine():
    import os

    if hasattr(os, "sched_getaffinity"):
        assert usable_cores() == len(os.sched_getaffinity(0))
    assert usable_cores() >= 1


def test_planned_seconds_spread_one_thread_recipes_over_the_cores():
    assert planned_seconds([(60, True), (50, True), (40, True), (30, False)], cores=2) == 90 + 30  # 60+40 | 50
    assert planned_seconds([(60, True), (50, True)], cores=1) == 110
    assert planned_seconds([(10, False), (20, False)], cores=8) == 30  # many-thread recipes take turns


def test_a_missed_milestone_makes_the_tour_exit_non_zero_and_says_why(tmp_path, monkeypatch, capsys):
    logic = registry.get("mp-neuron").recipe("logic")
    monkeypatch.setattr(type(logic), "quick_milestone", Milestone("truth_tables_correct", 2.0))
    assert main(["tour", "--quick", "--out", str(tmp_path), "--only", "mp-neuron"]) == 1
    err = capsys.readouterr().err
    assert "missed: mp-neuron · logic: truth_tables_correct = 1, target >= 2: MISSED" in err
    assert "MISSED" in err.split("member")[-1]  # the final table marks it too
    page = (tmp_path / "report.html").read_text()
    assert "0 of 1 milestones" in page and 'class="badge missed"' in page


def test_a_full_tour_continues_where_it_stopped(tmp_path, capsys):
    assert main(["tour", "--out", str(tmp_path), "--only", "mp-neuron"]) == 0
    first = json.loads((tmp_path / "report.json").read_text())["members"]
    assert [e["run"] for e in first] == ["fresh"] * len(first)
    assert main(["tour", "--out", str(tmp_path), "--only", "mp-neuron"]) == 0
    again = json.loads((tmp_path / "report.json").read_text())["members"]
    assert [e["run"] for e in again] == ["done"] * len(first)  # metrics.json reused, nothing trained
    assert [e["milestone"] for e in again] == [e["milestone"] for e in first]
    assert "(reused)" in capsys.readouterr().err


def test_a_run_directory_counts_only_for_the_same_settings(tmp_path):
    settings = {"epochs": 3, "lr": 0.1}
    meta = {"member": "lenet", "recipe": "lenet-5", "seed": 0, "settings": settings}
    assert _state(tmp_path, "lenet", "lenet-5", settings) == "fresh"  # nothing there
    (tmp_path / "run.json").write_text(json.dumps(meta))
    assert _state(tmp_path, "lenet", "lenet-5", settings) == "fresh"  # started, left nothing to resume
    (tmp_path / "resume.safetensors").write_bytes(b"")
    assert _state(tmp_path, "lenet", "lenet-5", settings) == "resume"
    assert _state(tmp_path, "lenet", "lenet-5", {**settings, "epochs": 1}) == "fresh"  # a quick run's leftovers
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert _state(tmp_path, "lenet", "lenet-5", settings) == "done"
    (tmp_path / "run.json").write_text(json.dumps({**meta, "seed": 1}))
    assert _state(tmp_path, "lenet", "lenet-5", settings) == "fresh"


def test_the_quick_tour_fits_its_budget_on_two_cores():
    """The declared quick_seconds of every tour recipe, run as the tour runs them on 2 idle cores, stay under
    QUICK_BUDGET_SECONDS; a recipe that declares none cannot be budgeted, so every one must."""
    recipes = [(m, r) for m in select() for r in m.recipes().values() if r.in_tour]
    missing = [f"{m.name} · {r.name}" for m, r in recipes if r.quick_seconds is None]
    total = planned_seconds([(r.quick_seconds or 0, side_by_side(r, quick=True)) for _, r in recipes], cores=2)
    assert not missing, f"{len(missing)} tour recipes declare no quick_seconds: {', '.join(missing)}"
    assert total <= QUICK_BUDGET_SECONDS, f"the quick tour is declared to take {total:.0f} s on 2 cores"
