"""Renaming a state dict between zupu's keys and a Hugging Face architecture's, with errors that name keys.

An architecture module gives `names(zupu_key) -> [hf_key, ...]`: one name for a plain rename, several
for a zupu tensor that HF stores in pieces (a fused q/k/v projection is HF's query, key and value,
stacked along dim 0), in equal parts; or `{hf_key: rows, ...}` for parts of unequal sizes (grouped-query
attention's fused projection: 9 query heads and 3 key and value heads of 64 are 576, 192 and 192 rows).
Loading checks the HF checkpoint against the names the model expects *before* converting, so a missing,
unexpected or wrongly shaped tensor is reported under the checkpoint's own key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zupu.atomic import write_json
from zupu.checkpoint import (
    CONFIG,
    WEIGHTS,
    check_keys,
    config_from_dict,
    load_into,
    load_state,
    read_config,
    save_state,
)
from zupu.errors import CheckpointError

Names = Callable[[str], list[str] | dict[str, int]]


def parts(names: Names, key: str, rows: int) -> dict[str, int]:
    """The HF pieces of zupu tensor `key` (`rows` long on dim 0) and the rows of each, in stacking order."""
    hf = names(key)
    if not isinstance(hf, dict):
        if rows % len(hf):
            raise CheckpointError(f"{key}: {rows} rows do not split into {len(hf)} equal parts {hf}")
        return dict.fromkeys(hf, rows // len(hf))
    if sum(hf.values()) != rows:
        raise CheckpointError(f"{key}: its parts {hf} add up to {sum(hf.values())} rows, the tensor has {rows}")
    return hf


def _rows(value: torch.Tensor) -> int:
    return value.shape[0] if value.dim() else 1  # a scalar (CLIP's logit_scale) is one piece of itself


def to_hf(state: dict[str, torch.Tensor], names: Names) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        hf = parts(names, key, _rows(value))
        out.update(zip(hf, value.split(list(hf.values()), dim=0) if value.dim() else [value], strict=True))
    return out


def from_hf(model: nn.Module, state: dict[str, torch.Tensor], names: Names, where: str,
            ignore: Iterable[str] = (), assign: bool = False) -> None:
    """Load HF-named `state` into `model`; `ignore` lists checkpoint keys that carry nothing zupu keeps;
    `assign` makes the tensors the parameters (see `load_into`)."""
    own = model.state_dict()
    expected: dict[str, tuple[str, tuple[int, ...]]] = {}  # hf key -> (zupu key, expected shape)
    for key, value in own.items():
        for name, rows in parts(names, key, _rows(value)).items():
            expected[name] = (key, (rows, *value.shape[1:]) if value.dim() else ())
    state = {k: v for k, v in state.items() if k not in set(ignore)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {expected[k][1]}"
              for k in sorted(expected.keys() & state.keys()) if tuple(state[k].shape) != expected[k][1]]
    check_keys(model, where, missing, unexpected, shapes)
    load_into(model, {key: _join([state[n] for n in names(key)]) for key in own}, where, assign)


def _join(pieces: list[torch.Tensor]) -> torch.Tensor:
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)  # one piece is the tensor itself, not a copy


def save_hf(model: nn.Module, out: str | os.PathLike, names: Names, architectures: dict[str, type], family: str,
            model_type: str, zupu_meta: dict[str, Any], **extra: Any) -> None:
    """Write `model` as a folder `transformers` loads: HF-named weights and a config.json of the model's own
    dataclass config plus `extra`; a classifier (a config with `num_labels` and a `classifier` layer) also
    gets HF's label maps. `architectures` maps HF class names to zupu classes, as `open_checkpoint` takes."""
    arch = next((name for name, cls in architectures.items() if cls is type(model)), None)
    if arch is None:
        raise CheckpointError(f"{type(model).__name__} has no Hugging Face {family} architecture")
    cfg = dataclasses.asdict(model.config)
    num_labels = cfg.pop("num_labels", None)
    if num_labels is not None and hasattr(model, "classifier"):
        cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        cfg["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    out = Path(out)
    save_state(to_hf(model.state_dict(), names), out / WEIGHTS)
    write_json(out / CONFIG, {**cfg, **extra, "model_type": model_type, "architectures": [arch], "zupu": zupu_meta})


def config_from_hf(config_cls: type, cfg: dict[str, Any], where: str) -> Any:
    """The fields of an HF config.json that `config_cls` has (num_labels from id2label) -> `config_cls`."""
    values = dict(cfg)
    if isinstance(cfg.get("id2label"), dict):
        values["num_labels"] = len(cfg["id2label"])
    return config_from_dict(config_cls, values, where, strict=False)


def open_checkpoint(path: str | os.PathLike, architectures: dict[str, type], base: str,
                    member: str) -> tuple[dict[str, Any], str, dict[str, torch.Tensor]]:
    """An HF checkpoint dir -> (config, architecture name, state). The architecture defaults to the first
    of `architectures` (the bare model); a bare model saved from a head model (every key under `base.`)
    loses that prefix."""
    path = Path(path)
    cfg = read_config(path)
    default = next(iter(architectures))
    arch = (cfg.get("architectures") or [default])[0]
    if arch not in architectures:
        raise CheckpointError(f"{path / CONFIG}: architecture {arch!r} is not one zupu's {member} loads; "
                              f"known: {', '.join(architectures)}")
    state = load_state(path)  # any weights layout: one file, shards, or pytorch_model.bin
    if arch == default and state and all(k.startswith(f"{base}.") for k in state):
        state = {k.removeprefix(f"{base}."): v for k, v in state.items()}
    return cfg, arch, state
