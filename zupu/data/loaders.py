"""Loaders: verified local files -> numpy arrays / Python text.

Image sets come back as `{"train": Split, "test": Split}` with `x` uint8 (N, 28, 28) or float
features and `y` int64 labels; the model side decides scaling and shape.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
    x: np.ndarray
    y: np.ndarray


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, found {arr.size} values")
    return arr.reshape(shape)


def _idx_split(paths: dict[str, Path], prefix: str) -> Split:
    return Split(read_idx(paths[f"{prefix}-images-idx3-ubyte.gz"]),
                 read_idx(paths[f"{prefix}-labels-idx1-ubyte.gz"]).astype(np.int64))


def digits(paths: dict[str, Path]) -> dict[str, Split]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return {"all": Split(d.images.astype(np.uint8), d.target.astype(np.int64))}  # (1797, 8, 8) in 0..16


def mnist(paths: dict[str, Path]) -> dict[str, Split]:
    with gzip.open(paths["mnist_5k.csv.gz"], "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    train = Split(table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1])
    return {"train": train, "test": _idx_split(paths, "t10k")}


def fashion_mnist(paths: dict[str, Path]) -> dict[str, Split]:
    return {"train": _idx_split(paths, "train"), "test": _idx_split(paths, "t10k")}


def notmnist(paths: dict[str, Path]) -> dict[str, Split]:
    return {"all": _idx_split(paths, "t10k")}  # labels 0..9 = letters A..J


def uci_letters(paths: dict[str, Path]) -> dict[str, Split]:
    lines = paths["letter-recognition.data"].read_text().splitlines()
    rows = [ln.split(",") for ln in lines if ln.strip() and not ln.startswith("Letter")]
    y = np.array([ord(r[0]) - ord("A") for r in rows], dtype=np.int64)
    x = np.array([[int(v) for v in r[1:]] for r in rows], dtype=np.float32)
    return {"all": Split(x, y)}  # 16 features in 0..15, labels 0..25 = A..Z


def text(paths: dict[str, Path]) -> str:
    (path,) = paths.values()
    return path.read_text(encoding="utf-8")


def tang_poems(paths: dict[str, Path], collection: str = "quantangshi") -> list[dict]:
    """Poems as dicts with title, author and paragraphs (lines); `collection="tangshi300"` for 唐诗三百首."""
    if collection == "tangshi300":
        return json.loads(paths["tangshi300.json"].read_text(encoding="utf-8"))
    files = sorted((p for k, p in paths.items() if k.startswith("quantangshi/")),
                   key=lambda p: int(p.name.split(".")[2]))
    return [poem for p in files for poem in json.loads(p.read_text(encoding="utf-8"))]


def tatoeba(paths: dict[str, Path]) -> list[tuple[str, str]]:
    """(English, Chinese) pairs."""
    pairs = []
    for line in paths["cmn.txt"].read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) >= 2:
            pairs.append((cols[0], cols[1]))
    return pairs


def multi30k(paths: dict[str, Path], src: str = "en", tgt: str = "de") -> dict[str, list[tuple[str, str]]]:
    def lines(split: str, lang: str) -> list[str]:
        with gzip.open(paths[f"{split}.{lang}.gz"], "rt", encoding="utf-8") as f:
            return f.read().splitlines()

    return {name: list(zip(lines(split, src), lines(split, tgt), strict=True))
            for name, split in (("train", "train"), ("val", "val"), ("test", "test_2016_flickr"))}


def paths(paths: dict[str, Path]) -> dict[str, Path]:
    """For file sets a member parses itself (tokenizer files, weights, JSONL)."""
    return paths


def isbi_membrane(paths: dict[str, Path]) -> Split:
    """x: the 30 images, uint8 (30, 512, 512); y: bool (30, 512, 512), True inside cells, False on membranes.
    Kept in file order (serial sections), so a split by index keeps neighbouring sections together."""
    from PIL import Image

    def stack(kind: str) -> np.ndarray:
        return np.stack([np.asarray(Image.open(paths[f"{kind}/{i}.png"]).convert("L")) for i in range(30)])

    return Split(stack("image"), stack("label") > 127)
