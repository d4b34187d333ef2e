"""The reference libraries that parity tests compare against: a missing one skips its tests, saying what to
install, except under CI=true, where it fails, so that CI never passes by silently testing nothing."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(why: str) -> None:
    """Skip with `why`, or fail with it under CI=true."""
    if ci():
        pytest.fail(f"CI=true and {why}", pytrace=False)
    pytest.skip(why)


def need(module: str) -> ModuleType:
    """`pytest.importorskip`, except that CI=true makes a missing reference library a failure."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        unavailable(f"{module} is not importable ({e}); install the test extras: pip install -e '.[test]'")
        raise  # unreachable: unavailable() raises
