"""Saving and loading models: `config.json` + `model.safetensors`, and `from_pretrained`.

A zupu run directory's `config.json` holds the model config's fields at the top level (named as in
the HF architecture's config where one exists) plus a `"zupu"` entry: the member and recipe that
made the run (not the owner of the class: scaling saves a GPT), seed, settings, and the class
(`architecture` in `model_module`). A directory without that entry is read as an HF checkpoint and
handed to the member whose `hf_model_types` lists its `model_type`. Such a member's models are saved in the HF
layout, unless its `zupu.hf` module's `fits(model)` says the architecture cannot hold this one (a
pre-LN encoder-decoder is no MarianMT), which then keeps zupu's own layout.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from zupu import registry
from zupu.atomic import write_bytes, write_json
from zupu.errors import CheckpointError, ZupuError

CONFIG, WEIGHTS = "config.json", "model.safetensors"


def member_of(model: nn.Module) -> registry.Member:
    """The member whose model module defines the model's class: `zupu.models.<module>`, or a module inside it
    when the member is a package (`zupu.models.diffusion.unet`)."""
    module = type(model).__module__
    for m in registry.members():
        if module == f"zupu.models.{m.module_name}" or module.startswith(f"zupu.models.{m.module_name}."):
            return m
    raise ZupuError(f"{type(model).__name__} is not a zupu member's model (module {module})")


def save_state(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    # Clone so tied weights (shared storage) are written as separate tensors, which safetensors needs.
    write_bytes(path, st_save({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}))


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a checkpoint needs {WEIGHTS} beside its {CONFIG}")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); the checkpoint is corrupt") from None


def load_into(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """`load_state_dict(strict=True)` with an error that names every bad key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    check_keys(model, where, missing, unexpected, shapes)
    model.load_state_dict(state)


def check_keys(model: nn.Module, where: str, missing: list[str], unexpected: list[str], shapes: list[str]) -> None:
    """Raise one error that names every missing, unexpected and wrongly shaped key, if there are any."""
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(f"wrong shapes [{'; '.join(shapes)}]")
        raise CheckpointError(f"{where} does not fit {type(model).__name__}: " + ", ".join(parts))


def save_model(model: nn.Module, out: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write `config.json` and `model.safetensors` for `model` into directory `out`.

    The class's own member decides the layout (HF or zupu's); `meta` (a run's member, recipe, seed, settings)
    overrides the member the entry names, so a run records what made it, not whose class it saved."""
    out = Path(out)
    member = member_of(model)
    zupu_meta = {"member": member.name, "architecture": type(model).__name__,
                 "model_module": type(model).__module__, **(meta or {})}
    hf = _hf_module(member)
    if hf is not None and hasattr(hf, "save_pretrained") and getattr(hf, "fits", lambda m: True)(model):
        hf.save_pretrained(model, out, zupu_meta)
        return out
    config = dataclasses.asdict(model.config)
    write_json(out / CONFIG, {**config, "zupu": zupu_meta})
    save_state(model.state_dict(), out / WEIGHTS)
    return out


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    cfg_path = path if path.suffix == ".json" else path / CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} is missing: not a zupu run or HF checkpoint directory")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path} must hold a JSON object, got {type(cfg).__name__}")
    return cfg


def _hf_module(member: registry.Member):
    if not member.hf_model_types:
        return None
    try:
        return importlib.import_module(f"zupu.hf.{member.module_name}")
    except ModuleNotFoundError:
        return None


def _model_module(meta: dict[str, Any], member: registry.Member, where: Path):
    """The module that defines the saved class: the one the entry names, else (a run saved before entries
    named it) the member's own."""
    name = meta.get("model_module")
    if name is None:
        return member.model_module()
    if not isinstance(name, str) or not name.startswith("zupu.models."):
        raise CheckpointError(f"{where}: model_module {name!r} is not a zupu model module (zupu.models.*)")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise CheckpointError(f"{where}: model_module {name!r} does not exist in this zupu; "
                              "upgrade zupu or load the run where it was made") from None


def load_model(path: str | os.PathLike) -> nn.Module:
    """Load a zupu run directory or an HF checkpoint directory."""
    path = Path(path)
    cfg = read_config(path)
    meta = cfg.get("zupu")
    model_type = cfg.get("model_type")
    if model_type and (member := registry.member_for_model_type(model_type)):
        hf = _hf_module(member)
        if hf is None:
            raise CheckpointError(f"{path}: model_type {model_type!r} ({member.name}) has no HF loader yet")
        return hf.from_pretrained(path)
    if not isinstance(meta, dict) or "member" not in meta:
        raise CheckpointError(
            f"{path / CONFIG} has neither a zupu entry nor a model_type zupu knows "
            f"(got model_type={model_type!r}); is this a zupu run or HF checkpoint directory?"
        )
    member = registry.get(meta["member"])
    mod = _model_module(meta, member, path / CONFIG)
    arch = meta.get("architecture") or member.model
    cls = getattr(mod, arch, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise CheckpointError(f"{path / CONFIG}: {mod.__name__} has no architecture {arch!r}")
    config_cls = cls.config_class
    fields = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in cfg.items() if k in fields}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        model = cls(config_cls(**values))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG} is not a valid {config_cls.__name__}: {e}") from None
    load_into(model, load_state(path / WEIGHTS), str(path / WEIGHTS))
    return model.eval()


def from_pretrained(path_or_repo_id: str | os.PathLike) -> nn.Module:
    """A zupu run dir, an HF checkpoint dir, or `org/name` on a zupu hub -> the zupu model."""
    path = Path(path_or_repo_id)
    if path.exists():
        return load_model(path)
    name = str(path_or_repo_id)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        from zupu.hub.client import snapshot

        return load_model(snapshot(name))
    raise CheckpointError(f"{name} is neither a local directory nor a hub repo id (org/name)")
