"""Renaming a state dict between zupu's keys and a Hugging Face architecture's, with errors that name keys.

An architecture module gives `names(zupu_key) -> [hf_key, ...]`: one name for a plain rename, several
for a zupu tensor that HF stores in pieces (a fused q/k/v projection is HF's query, key and value,
stacked along dim 0). Loading checks the HF checkpoint against the names the model expects *before*
converting, so a missing, unexpected or wrongly shaped tensor is reported under the checkpoint's own key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from zupu.checkpoint import load_into
from zupu.errors import CheckpointError

Names = Callable[[str], list[str]]


def to_hf(state: dict[str, torch.Tensor], names: Names) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        hf = names(key)
        for name, piece in zip(hf, value.chunk(len(hf), dim=0), strict=True):
            out[name] = piece
    return out


def from_hf(model: nn.Module, state: dict[str, torch.Tensor], names: Names, where: str,
            ignore: Iterable[str] = ()) -> None:
    """Load HF-named `state` into `model`; `ignore` lists checkpoint keys that carry nothing zupu keeps."""
    own = model.state_dict()
    expected: dict[str, tuple[str, tuple[int, ...]]] = {}  # hf key -> (zupu key, expected shape)
    for key, value in own.items():
        hf = names(key)
        shape = (value.shape[0] // len(hf), *value.shape[1:])
        expected.update({name: (key, shape) for name in hf})
    state = {k: v for k, v in state.items() if k not in set(ignore)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {expected[k][1]}"
              for k in sorted(expected.keys() & state.keys()) if tuple(state[k].shape) != expected[k][1]]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(f"wrong shapes [{'; '.join(shapes)}]")
        raise CheckpointError(f"{where} does not fit {type(model).__name__}: " + ", ".join(parts))
    load_into(model, {key: torch.cat([state[n] for n in names(key)]) for key in own}, where)
