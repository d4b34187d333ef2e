"""zupu (族谱): the neural-network family tree, runnable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zupu.checkpoint import from_pretrained
    from zupu.registry import create

__version__ = "0.1.0"
__all__ = ["__version__", "create", "from_pretrained"]

# `zupu.create` and `zupu.from_pretrained` are imported on first use, so that `import zupu.hub.server` or
# `zupu --help` does not load torch (a hub host need not have it).
_LAZY = {"create": "zupu.registry", "from_pretrained": "zupu.checkpoint"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'zupu' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value
