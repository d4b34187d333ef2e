"""segment-anything's prompt encoder and mask decoder in zupu's SAM: the same module names except the
two-way blocks' MLP, which is zupu's FeedForward (`lin1`, `lin2` -> `fc`, `proj`). The image encoder is
zupu's own small ViT, so its weights are not taken."""

from __future__ import annotations

import torch

from zupu.checkpoint import check_keys
from zupu.models.sam import SAM

PARTS = ("prompt_encoder.", "mask_decoder.")
_RENAMES = ((".mlp.lin1.", ".mlp.fc."), (".mlp.lin2.", ".mlp.proj."))


def zupu_key(key: str) -> str:
    for theirs, ours in _RENAMES:
        key = key.replace(theirs, ours)
    return key


def load_segment_anything(model: SAM, state: dict[str, torch.Tensor],
                          where: str = "segment-anything state dict") -> None:
    """Load a segment-anything `Sam` state dict's prompt encoder and mask decoder into `model` (its
    `image_encoder.*` and anything else is left out); every missing or misshapen tensor is named."""
    theirs = {zupu_key(k): v for k, v in state.items() if k.startswith(PARTS)}
    own = {k: v for k, v in model.state_dict().items() if k.startswith(PARTS)}
    shapes = [f"{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own.keys() & theirs.keys() if own[k].shape != theirs[k].shape]
    check_keys(model, where, sorted(own.keys() - theirs.keys()), sorted(theirs.keys() - own.keys()), shapes)
    model.load_state_dict(theirs, strict=False)
