"""The reference libraries that parity tests compare against: a missing one skips its tests, saying what to
install, except under CI=true, where it fails, so that CI never passes by silently testing nothing."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest
import torch


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


def randomise_vectors(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every 1-D parameter (LayerNorm gains and biases, linear biases) drawn at random, in place.

    A reference model's own init sets norm gains to 1 and biases to 0, so a checkpoint map that swapped
    two norms, or two biases, would still give equal outputs; random values make every one count."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1:
                centre = 1.0 if name.endswith("weight") else 0.0  # gains around 1, biases around 0
                p.copy_(centre + 0.3 * torch.randn(p.shape, generator=gen))
    return module


def segment_anything_modeling() -> ModuleType:
    """`segment_anything.modeling` without running the package's __init__, which imports torchvision (and
    torchvision does not import beside every torch release); the modeling files need torch only."""
    import importlib.util
    import sys

    if "segment_anything" not in sys.modules:  # an empty package whose submodules import from its files
        spec = importlib.util.find_spec("segment_anything")
        if spec is None:
            unavailable("segment_anything is not installed; install the test extras: pip install -e '.[test]'")
        package = ModuleType("segment_anything")
        package.__path__, package.__spec__ = list(spec.submodule_search_locations), spec
        sys.modules["segment_anything"] = package
    return importlib.import_module("segment_anything.modeling")
