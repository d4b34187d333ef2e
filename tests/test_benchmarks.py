"""benchmarks/results.py stamps what it writes, writes atomically, and every RESULTS file carries a valid stamp."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load_results():
    spec = importlib.util.spec_from_file_location("zupu_benchmarks_results", BENCH / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results = _load_results()
MARKDOWN = "# A benchmark\n\n| model | tokens/s |\n|---|---|\n| zupu | 123.4 |\n"


def test_write_stamps_the_run(tmp_path):
    run = results.Run(BENCH / "rnn.py", ["--repeats", "3", "--out", "a file"])
    path = run.write(tmp_path / "RESULTS-x.md", MARKDOWN, threads=3)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[0] == "# A benchmark" and lines[1].startswith(results.STAMP)
    stamp = json.loads(lines[1][len(results.STAMP):-len(" -->")])
    head = subprocess.run(["git", "-C", str(BENCH), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert stamp["commit"] == head and isinstance(stamp["dirty"], bool)
    assert stamp["script"] == "benchmarks/rnn.py"
    assert stamp["command"].endswith("python benchmarks/rnn.py --repeats 3 --out 'a file'")
    assert stamp["torch"] == torch.__version__ and stamp["threads"] == 3
    assert stamp["capability"] == torch.backends.cpu.get_cpu_capability()
    assert stamp["cores"] >= 1 and stamp["cpu"]
    assert len(stamp["load_before"]) == len(stamp["load_after"]) == 3
    assert f"`{stamp['command']}`" in lines[2]  # the sentence a reader sees names the command
    assert text.endswith("| zupu | 123.4 |\n")  # the results themselves, unchanged
    checked = results.check(path)
    assert checked["pending"] is False and checked["sha256"] == stamp["sha256"]


def test_thread_settings_are_part_of_the_command(monkeypatch):
    monkeypatch.setattr(results, "_START_ENV", {"OMP_NUM_THREADS": "1"})
    assert results.command_line(BENCH / "cnn.py", ["--full"]) == "OMP_NUM_THREADS=1 python benchmarks/cnn.py --full"


def test_a_hand_edit_fails_the_check(tmp_path):
    path = results.Run(BENCH / "rnn.py", []).write(tmp_path / "RESULTS-x.md", MARKDOWN)
    path.write_text(path.read_text(encoding="utf-8").replace("123.4", "223.4"), encoding="utf-8")
    with pytest.raises(results.StampError, match="edited after"):
        results.check(path)
    path.write_text(MARKDOWN, encoding="utf-8")
    with pytest.raises(results.StampError, match="no benchmark stamp"):
        results.check(path)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "RESULTS-x.md"
    path.write_text("the previous results\n", encoding="utf-8")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        results.Run(BENCH / "rnn.py", []).write(path, MARKDOWN)
    assert path.read_text(encoding="utf-8") == "the previous results\n"
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS-x.md"]  # no temporary file left behind


def test_markdown_without_a_title_is_refused(tmp_path):
    with pytest.raises(results.StampError, match="title"):
        results.Run(BENCH / "rnn.py", []).write(tmp_path / "RESULTS-x.md", "| a | b |\n")


def test_pending_mark_names_the_command_and_catches_edits(tmp_path):
    path = tmp_path / "RESULTS-x.md"
    path.write_text("# Old\n\nhand-written 1.55x\n", encoding="utf-8")
    results.mark_pending(path, "python benchmarks/rnn.py --repeats 9")
    results.mark_pending(path, "python benchmarks/rnn.py --repeats 5")  # marking again replaces the mark
    text = path.read_text(encoding="utf-8")
    assert text.startswith("**Not regenerated yet:** `python benchmarks/rnn.py --repeats 5`")
    assert text.count("Not regenerated yet") == 1 and text.endswith("# Old\n\nhand-written 1.55x\n")
    assert results.check(path)["pending"] is True
    path.write_text(text.replace("1.55x", "1.65x"), encoding="utf-8")
    with pytest.raises(results.StampError, match="edited after"):
        results.check(path)
    with pytest.raises(results.StampError, match="names no benchmark script"):
        results.mark_pending(path, "python benchmarks/nothing.py")


def test_every_results_file_is_stamped_by_its_one_script():
    scripts = {}
    for path in sorted(BENCH.glob("RESULTS-*.md")):
        stamp = results.check(path)  # StampError: hand-written, edited, or its script is gone
        assert stamp["command"].split("python ", 1)[1].startswith(stamp["script"]), path.name
        # one file per script and CPU kind: a speed claim is made per kind (RESULTS-gpt-train-avx2.md)
        kind = (stamp["script"], stamp.get("capability"))
        assert kind not in scripts, f"{path.name} and {scripts.get(kind)} share a script and a CPU kind"
        scripts[kind] = path.name
    written = {f"benchmarks/{p.name}" for p in BENCH.glob("*.py") if p.name != "results.py"}
    assert {script for script, _ in scripts} == written, "every benchmark script writes a RESULTS file"
    for script in written:  # and writes it through the stamping writer
        assert "Run(__file__)" in (BENCH.parent / script).read_text(encoding="utf-8"), script


@pytest.mark.skipif(sys.platform == "win32", reason="the command line is a POSIX shell's")
def test_the_checker_command_agrees():
    out = subprocess.run([sys.executable, str(BENCH / "results.py")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(BENCH.parent)})
    assert out.returncode == 0, out.stdout + out.stderr
