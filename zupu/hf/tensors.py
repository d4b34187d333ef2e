"""The one tensor reader every checkpoint loader uses: safetensors, sharded safetensors and `pytorch_model.bin`.

A checkpoint directory holds its weights under one of the names `transformers` and `diffusers` write
(`WEIGHT_FILES`, tried in that order: safetensors before pickles):

    model.safetensors                                   transformers, zupu
    model.safetensors.index.json -> shards              transformers' sharded save (`max_shard_size`)
    diffusion_pytorch_model.safetensors[.index.json]    diffusers' models
    pytorch_model.bin[.index.json]                      transformers with safe_serialization=False, old uploads
    diffusion_pytorch_model.bin                         old diffusers uploads

Tensors are streamed one at a time: safetensors through `safe_open` (the file is memory-mapped, so a
shard is never read whole into a bytes object), `.bin` through `torch.load(weights_only=True, mmap=True)`
when it is a zip archive (every `torch.save` since 1.6). The dtype policy is the caller's: `dtype=None`
keeps each tensor's dtype in the file, a dtype casts the floating-point tensors to it (integer and bool
tensors, such as position ids or masks, are never cast). A missing, truncated or corrupt file is a
`CheckpointError` that names it.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from zupu.errors import CheckpointError

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model.bin.index.json", "diffusion_pytorch_model.bin",
)


def find_weights(path: str | os.PathLike) -> Path:
    """A checkpoint directory -> its weights file (the first of `WEIGHT_FILES` it holds); a file -> itself."""
    path = Path(path)
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} holds no weights: expected one of {', '.join(WEIGHT_FILES)}")
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a checkpoint needs its weights file")
    return path


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return t.to(dtype) if dtype is not None and t.is_floating_point() else t


def _shards(index: Path) -> dict[Path, set[str]]:
    """A sharded checkpoint's index -> {shard file: the keys the index places in it}."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError(f"weight_map is a {type(weight_map).__name__}, not an object")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index} is not a readable shard index ({type(e).__name__}: {e})") from None
    shards: dict[Path, set[str]] = {}
    for key, name in weight_map.items():
        if not isinstance(name, str) or Path(name).name != name:  # a shard lies beside its index, nowhere else
            raise CheckpointError(f"{index}: {key!r} maps to {name!r}, which is not a file name beside the index")
        shards.setdefault(index.parent / name, set()).add(key)
    return shards


def _safetensors(path: Path, dtype: torch.dtype | None, keys: set[str] | None) -> Iterator[tuple[str, torch.Tensor]]:
    try:
        with safe_open(path, framework="pt") as f:
            names = list(f.keys())
            if keys is not None and (missing := sorted(keys - set(names))):
                raise CheckpointError(f"{path} lacks {missing}, which its shard index places there")
            for name in names:
                yield name, _cast(f.get_tensor(name), dtype)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: a checkpoint needs it") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); "
                              "the checkpoint is corrupt or truncated") from None


def _pickle(path: Path, dtype: torch.dtype | None, keys: set[str] | None) -> Iterator[tuple[str, torch.Tensor]]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a checkpoint needs it")
    try:  # mmap needs the zip format; a legacy pickle is read whole
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e}); "
                              "the file is corrupt or truncated") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    if keys is not None and (missing := sorted(keys - set(state))):
        raise CheckpointError(f"{path} lacks {missing}, which its shard index places there")
    for name in list(state):
        yield name, _cast(state.pop(name), dtype)  # pop: a cast copy does not keep the original alive


def iter_tensors(path: str | os.PathLike, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of a checkpoint directory or weights file, one at a time.

    `dtype=None` keeps the file's dtypes; a dtype casts the floating-point tensors to it."""
    file = find_weights(path)
    if file.name.endswith(".index.json"):
        read = _safetensors if file.name.endswith(".safetensors.index.json") else _pickle
        for shard, keys in sorted(_shards(file).items()):
            yield from read(shard, dtype, keys)
    elif file.suffix == ".bin":
        yield from _pickle(file, dtype, None)
    else:
        yield from _safetensors(file, dtype, None)


def read_tensors(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory or weights file, by name (see `iter_tensors`)."""
    return dict(iter_tensors(path, dtype))


def model_dtype(state: dict[str, torch.Tensor], dtype: torch.dtype | None, where: str) -> torch.dtype:
    """The dtype a model loaded from `state` should have: `dtype` itself, or with `dtype=None` (keep the
    file's) the one dtype the checkpoint's floating-point tensors share."""
    if dtype is not None:
        return dtype
    kinds = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(kinds) > 1:
        raise CheckpointError(f"{where} mixes {sorted(str(k) for k in kinds)}: no one dtype keeps them all; "
                              "pass dtype= to cast the model to one")
    return kinds.pop() if kinds else torch.get_default_dtype()
