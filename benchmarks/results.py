"""Stamped RESULTS files: each benchmarks/RESULTS-*.md is written whole, by one run of one script.

A script makes a `Run` when it starts (the load average then) and calls `Run.write(path, markdown)`
at the end. The file it writes is the markdown's title, a stamp, then the rest of the markdown. The
stamp is one HTML comment holding JSON, repeated as a sentence for the reader: the command that
reproduces the file, the commit (and whether the tree had other changes), start and end time, torch's
version, the torch threads and the cores the process could use, the CPU and the kernels torch picked
for it, and the load average at the start and the end (the machine is shared: the load is part of the
result). It also holds the sha256 of the file without the comment line, so a hand edit is caught by
`python benchmarks/results.py` and tests/test_benchmarks.py.

A file that cannot be regenerated yet (its script runs for an hour, or needs a peer's checkout) carries
a pending stamp instead, over the hand-written record it still holds:
`python benchmarks/results.py pending benchmarks/RESULTS-x.md "python benchmarks/x.py ..."`.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from zupu.atomic import atomic_open
from zupu.errors import ZupuError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STAMP, PENDING = "<!-- benchmark-stamp ", "<!-- benchmark-pending "
# Environment settings that change what a benchmark measures, as they were when the script started
# (before the script's own defaults such as `os.environ.setdefault`): part of the reproducing command.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")
_START_ENV = {k: os.environ[k] for k in THREAD_ENV if k in os.environ}


class StampError(ZupuError):
    """A RESULTS file without a valid stamp: written by hand, edited after its run, or not written yet."""


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def _dirty() -> bool | None:
    """Whether files other than the benchmarks' own outputs differ from the commit (None: not a checkout)."""
    out = _git("status", "--porcelain")
    if out is None:
        return None
    paths = [line[3:].split(" -> ")[-1].strip('"') for line in out.splitlines()]
    return any(not (p.startswith("benchmarks/") and not p.endswith(".py")) for p in paths)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def script_path(script: str | os.PathLike) -> str:
    """`script` relative to the repository root, as the reproducing command names it."""
    path = Path(script).resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def command_line(script: str | os.PathLike, argv: list[str]) -> str:
    """The shell command that reruns `script` with `argv` and the thread settings this process started with."""
    env = [f"{k}={shlex.quote(v)}" for k, v in _START_ENV.items()]
    return " ".join([*env, "python", shlex.join([script_path(script), *argv])])


class Run:
    """One benchmark run: what it started with; `write` stamps and writes its RESULTS file atomically."""

    def __init__(self, script: str | os.PathLike, argv: list[str] | None = None):
        self.script = script_path(script)
        self.command = command_line(script, sys.argv[1:] if argv is None else argv)
        self.started = _now()
        self.load_before = [round(x, 2) for x in os.getloadavg()]

    def stamp(self, threads: int | None = None) -> dict:
        head = _git("rev-parse", "HEAD")
        return {
            "script": self.script, "command": self.command,
            "commit": head.strip() if head else None, "dirty": _dirty(),
            "started": self.started, "finished": _now(),
            "torch": torch.__version__, "threads": threads or torch.get_num_threads(), "cores": _cores(),
            "cpu": _cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(),
            "load_before": self.load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
        }

    def write(self, path: str | os.PathLike, markdown: str, threads: int | None = None) -> Path:
        """Write `markdown` (a '# title' line, then the results) to `path` with this run's stamp.

        `threads`: the torch threads the measurements used, where the script set them per measurement
        (default: torch's count now)."""
        if not markdown.startswith("# "):
            raise StampError(f"{self.script}: a RESULTS file starts with a '# title' line, got "
                             f"{markdown[:40]!r}; give the markdown a title")
        title, _, rest = markdown.partition("\n")
        s = self.stamp(threads)
        commit = "commit unknown (not a git checkout)" if s["commit"] is None else (
            f"commit {s['commit'][:12]}" + (" with uncommitted changes" if s["dirty"] else ""))
        sentence = (f"*Written by `{s['command']}` at {commit}, {s['started']} to {s['finished'][11:]}; torch "
                    f"{s['torch']}, {s['threads']} torch thread(s) of {s['cores']} core(s), {s['cpu']} "
                    f"({s['capability']}); load average {' / '.join(map(str, s['load_before']))} at the start, "
                    f"{' / '.join(map(str, s['load_after']))} at the end (1 / 5 / 15 min). Rerun that "
                    "command to regenerate this file; do not edit it by hand.*")
        body = f"{title}\n{sentence}\n\n{rest.lstrip(chr(10))}".rstrip("\n") + "\n"
        s["sha256"] = _sha256(body)
        path = Path(path)
        with atomic_open(path, "w") as f:
            f.write(f"{title}\n{STAMP}{json.dumps(s, ensure_ascii=False)} -->\n{body[len(title) + 1:]}")
        print(f"wrote {path}", flush=True)
        return path


def _split(text: str, marker: str, where: int) -> tuple[dict, str] | None:
    """The JSON of the `marker` comment on line `where` and the text without that line, or None."""
    lines = text.split("\n")
    if len(lines) <= where or not lines[where].startswith(marker) or not lines[where].endswith(" -->"):
        return None
    try:
        stamp = json.loads(lines[where][len(marker):-len(" -->")])
    except json.JSONDecodeError:
        return None
    return stamp, "\n".join(lines[:where] + lines[where + 1:])


def check(path: str | os.PathLike) -> dict:
    """The stamp of a RESULTS file, with "pending": True for a pending one; StampError if it has none
    or the file changed after it was written."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    found = _split(text, STAMP, 1) or _split(text, PENDING, 1)
    if found is None:
        raise StampError(f"{path.name} has no benchmark stamp on its second line: rerun the script that writes "
                         "it, or mark it pending (python benchmarks/results.py pending ...)")
    stamp, body = found
    stamp["pending"] = PENDING in text.split("\n")[1]
    need = {"script", "command", "sha256"} | (set() if stamp["pending"] else {
        "commit", "dirty", "started", "finished", "torch", "threads", "cores", "cpu", "capability",
        "load_before", "load_after"})
    if need - stamp.keys():
        raise StampError(f"{path.name}: its stamp lacks {sorted(need - stamp.keys())}; rerun {stamp.get('command')}")
    if _sha256(body) != stamp["sha256"]:
        raise StampError(f"{path.name} was edited after `{stamp['command']}` wrote it: rerun that command "
                         "(narrative belongs in benchmarks/history/ or benchmarks/README.md)")
    if not (ROOT / stamp["script"]).is_file():
        raise StampError(f"{path.name}: its script {stamp['script']} does not exist")
    return stamp


def mark_pending(path: str | os.PathLike, command: str) -> Path:
    """Head a hand-written RESULTS file with the command that will regenerate it, and stamp that state."""
    path = Path(path)
    script = next((w for w in shlex.split(command) if w.endswith(".py")), None)
    if script is None or not (ROOT / script).is_file():
        raise StampError(f"{command!r} names no benchmark script under {ROOT}: give the command that writes "
                         f"{path.name}, e.g. 'python benchmarks/x.py --flag'")
    old = path.read_text(encoding="utf-8")
    if _split(old, PENDING, 1):
        old = "\n".join(old.split("\n")[2:])  # marked before: replace the mark
    line = (f"**Not regenerated yet:** `{command}` will write this file; until then it is the hand-written "
            f"record of earlier stops (also in benchmarks/history/{path.name}).")
    body = f"{line}\n{old}"
    stamp = {"script": script, "command": command, "sha256": _sha256(body)}
    with atomic_open(path, "w") as f:
        f.write(f"{line}\n{PENDING}{json.dumps(stamp, ensure_ascii=False)} -->\n{old}")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description="Check the stamps of benchmarks/RESULTS-*.md, or mark one pending.")
    sub = ap.add_subparsers(dest="action")
    p = sub.add_parser("pending", help="head a RESULTS file with the command that will regenerate it")
    p.add_argument("file", type=Path)
    p.add_argument("command")
    a = ap.parse_args()
    if a.action == "pending":
        print(f"marked {mark_pending(a.file, a.command)}")
        return
    bad = 0
    for f in sorted(HERE.glob("RESULTS-*.md")):
        try:
            s = check(f)
            print(f"{f.name}: {'pending' if s['pending'] else 'written'} by {s['command']}")
        except StampError as e:
            bad += 1
            print(f"{f.name}: {e}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
