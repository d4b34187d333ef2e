"""The command contracts: tree, train, eval, tour, data, and the errors a user can provoke."""

import json
import subprocess
import sys

import pytest

from zupu.cli import main


def zupu(*args, env=None):
    return subprocess.run([sys.executable, "-m", "zupu", *args], capture_output=True, text=True, env=env)


def test_tree_lists_every_member(capsys):
    assert main(["tree"]) == 0
    out = capsys.readouterr().out
    for name in ("mp-neuron", "perceptron", "backprop-mlp", "transformer", "gpt", "llama", "sam"):
        assert name in out
    assert main(["tree", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    status = {r["name"]: r["status"] for r in rows}
    assert status["perceptron"] == "works" and {"works", "planned"} >= set(status.values())
    assert next(r for r in rows if r["name"] == "backprop-mlp")["parents"] == ["perceptron"]


def test_unknown_member_is_one_clear_line():
    r = zupu("train", "perceptorn")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown member 'perceptorn'" in r.stderr and "did you mean perceptron" in r.stderr


def test_bad_setting_names_the_choices(tmp_path):
    r = zupu("train", "perceptron", "--out", str(tmp_path), "--set", "epoch=3")
    assert r.returncode == 2 and "no setting 'epoch'" in r.stderr and "did you mean epochs" in r.stderr
    r = zupu("train", "perceptron", "--out", str(tmp_path), "--set", "epochs=three")
    assert r.returncode == 2 and "epochs='three' is not a valid int" in r.stderr
    r = zupu("train", "perceptron", "--out", str(tmp_path), "--set", "epochs")
    assert r.returncode == 2 and "key=value" in r.stderr


def test_unknown_recipe():
    r = zupu("train", "perceptron", "--recipe", "digits")
    assert r.returncode == 2 and "unknown recipe of perceptron 'digits'" in r.stderr


def test_missing_data_is_one_clear_error(tmp_path):
    import os

    env = {**os.environ, "ZUPU_DATA_MIRROR": str(tmp_path / "no-mirror"), "ZUPU_CACHE": str(tmp_path / "c")}
    r = zupu("train", "perceptron", "--out", str(tmp_path / "run"), env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "dataset 'mnist'" in r.stderr and "ZUPU_DATA_MIRROR" in r.stderr


def test_train_eval_roundtrip_and_contract(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "perceptron", "--out", str(run), "--set", "epochs=1", "--seed", "1"]) == 0
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "metrics.json", "curves.png", "weights.png"):
        assert (run / name).is_file(), name
    result = json.loads((run / "metrics.json").read_text())
    assert set(result["milestone"]) >= {"name", "value", "target", "passed"}
    assert result["milestone"]["value"] == result["metrics"]["test_acc"]
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"]["test_acc"] == pytest.approx(result["metrics"]["test_acc"])
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["zupu"]["settings"]["epochs"] == 1 and cfg["zupu"]["seed"] == 1


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "mp-neuron", "--out", str(run)]) == 0
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    r = zupu("eval", str(run))
    assert r.returncode == 2 and "corrupt" in r.stderr and "model.safetensors" in r.stderr
    (run / "config.json").write_text("{not json")
    r = zupu("eval", str(run))
    assert r.returncode == 2 and "config.json is not valid JSON" in r.stderr
    r = zupu("eval", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "config.json is missing" in r.stderr


def test_data_list_and_fetch(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist" in out and "tang-poems" in out and "CC BY-SA 3.0" in out
    assert main(["data", "fetch", "uci-letters"]) == 0
    assert "1 files verified" in capsys.readouterr().out


def test_tour_writes_the_report(tmp_path):
    out = tmp_path / "tour"
    assert main(["tour", "--quick", "--out", str(out), "--only", "mp-neuron"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [(m["name"], m["recipe"]) for m in report["members"]] == [("mp-neuron", "logic")]
    for m in report["members"]:
        assert set(m) >= {"name", "recipe", "milestone", "seconds"}
        assert set(m["milestone"]) >= {"name", "value", "target", "passed"}
        assert m["milestone"]["passed"], m
    page = (out / "report.html").read_text()
    assert 'id="m-mp-neuron"' in page and 'id="r-mp-neuron-logic"' in page and "<svg class=tree" in page


def test_tour_rejects_unknown_members_before_running(tmp_path):
    r = zupu("tour", "--quick", "--out", str(tmp_path), "--only", "lenett")
    assert r.returncode == 2 and "did you mean lenet" in r.stderr
