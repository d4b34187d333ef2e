"""`zupu` finds its sub-commands with no central list, builds its parser without torch, and a hub host
imports the server without torch."""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
from reference import need

import zupu
from zupu.cli import add_commands, command_modules


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_hub_server_imports_without_torch():
    need("fastapi")
    r = python("import sys, zupu.hub.server; assert 'torch' not in sys.modules, 'torch was imported'")
    assert r.returncode == 0, r.stderr


def test_parser_and_help_need_no_torch():
    r = python("import sys; from zupu.cli import build_parser; build_parser(); "
               "assert 'torch' not in sys.modules, 'torch was imported'")
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "zupu", "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not re.search(r"\| +torch$", r.stderr, re.M), "zupu --help imported torch"
    listed = set(re.search(r"\{(.+?)\}", r.stdout)[1].split(","))
    assert {"tree", "train", "eval", "tour", "data", "generate", "embed", "scaling", "hub", "push"} <= listed


def test_every_add_parser_in_zupu_is_found():
    root = Path(zupu.__file__).parent
    defining = {".".join(("zupu", *p.relative_to(root).with_suffix("").parts)) for p in root.rglob("*.py")
                if re.search(r"^def add_parser\(", p.read_text(encoding="utf-8"), re.M)}
    assert defining <= set(command_modules()), ("define add_parser in zupu/apps/ or a sub-package's cli.py",
                                                defining - set(command_modules()))


def test_a_missing_optional_dependency_leaves_its_commands_out(tmp_path, monkeypatch):
    pkg = tmp_path / "room"
    (pkg / "apps").mkdir(parents=True)
    (pkg / "extra").mkdir()
    for init in (pkg, pkg / "apps", pkg / "extra"):
        (init / "__init__.py").write_text("")
    (pkg / "apps" / "hello.py").write_text(
        "def add_parser(sub):\n    sub.add_parser('hello')\n")
    (pkg / "apps" / "helpers.py").write_text("X = 1\n")  # no add_parser: nothing added
    (pkg / "extra" / "cli.py").write_text(
        "import a_package_nobody_installed\n\ndef add_parser(sub):\n    sub.add_parser('extra')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = command_modules(pkg, "room")
    assert modules == ["room.apps.hello", "room.apps.helpers", "room.extra.cli"]
    sub = argparse.ArgumentParser().add_subparsers()
    add_commands(sub, modules)
    assert "hello" in sub.choices and "extra" not in sub.choices

    (pkg / "apps" / "broken.py").write_text("import zupu.no_such_room\n")  # a bug in zupu is not hidden
    with pytest.raises(ModuleNotFoundError, match="zupu.no_such_room"):
        add_commands(sub, ["room.apps.broken"])


def test_package_attributes_load_on_first_use():
    from zupu import create, from_pretrained
    from zupu.checkpoint import from_pretrained as loader
    from zupu.registry import create as factory

    assert create is factory and from_pretrained is loader and zupu.create is factory
    with pytest.raises(AttributeError, match="no attribute 'creat'"):
        zupu.creat  # noqa: B018
