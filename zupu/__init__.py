"""zupu (族谱): the neural-network family tree, runnable."""

from zupu.checkpoint import from_pretrained
from zupu.registry import create

__version__ = "0.1.0"
__all__ = ["__version__", "create", "from_pretrained"]
