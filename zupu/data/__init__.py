"""Datasets: canonical address + sha256 + licence + loader, cached under ~/.cache/zupu."""

from zupu.data.loaders import Split
from zupu.data.registry import DATASETS, Dataset, fetch, get, load

__all__ = ["DATASETS", "Dataset", "Split", "fetch", "get", "load"]
