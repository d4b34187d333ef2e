"""Loaders: verified local files -> numpy arrays / Python text.

Image sets come back as `{"train": Split, "test": Split}` with `x` uint8 (N, 28, 28) or float
features and `y` int64 labels; the model side decides scaling and shape. Image-text sets (`emoji`) come
back as one record of aligned columns.
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
    """Labels 0..9 = letters A..J. The file holds 196 exact copies of other images (57 images appear 2-14
    times, always with one label); each is kept once, in first-seen order, so that no split can put an image
    on both sides: 9,804 images."""
    raw = _idx_split(paths, "t10k")
    rows = np.ascontiguousarray(raw.x).reshape(len(raw.x), -1)
    _, first = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))), return_index=True)  # one key per image
    keep = np.sort(first)
    return {"all": Split(raw.x[keep], raw.y[keep])}


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


# emoji-data's skin-tone modifiers (Fitzpatrick types), as Unicode names them
SKIN_TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone", "1F3FD": "medium skin tone",
              "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}


class Emoji(NamedTuple):
    """Aligned columns, one row an image: `images` uint8 (N, 64, 64, 3), RGB with the alpha composited on
    white; `names` lower-cased Unicode names ("grinning face", skin variants "waving hand sign: medium skin
    tone"); `keywords` the short names (tuples, "_" and "-" as spaces: ("grinning",)); `categories` and
    `subcategories` ("Smileys & Emotion", "face-smiling"); `groups` the index of the base emoji, shared by its
    skin-tone variants (split on it, or near-copies land on both sides)."""

    images: np.ndarray
    names: list[str]
    keywords: list[tuple[str, ...]]
    categories: list[str]
    subcategories: list[str]
    groups: np.ndarray


def _emoji_rows(listing: Path) -> list[tuple[dict, str, str]]:
    """(entry, image file, skin-tone suffix) for every Google image emoji.json lists, in its order."""
    rows = []
    for e in json.loads(listing.read_text(encoding="utf-8")):
        if e.get("has_img_google"):
            rows.append((e, e["image"], ""))
        for key, v in sorted((e.get("skin_variations") or {}).items()):
            if v.get("has_img_google"):
                rows.append((e, v["image"], ", ".join(SKIN_TONES[k] for k in key.split("-"))))
    return rows


def emoji_images(listing: Path) -> list[str]:
    """The image files of emoji-noto-64's folder, from its emoji.json."""
    return [image for _, image, _ in _emoji_rows(listing)]


def emoji(paths: dict[str, Path], skin_tones: bool = True) -> Emoji:
    """The emoji with their text; `skin_tones=False` keeps one image per base emoji (1,911 instead of 3,786)."""
    from PIL import Image

    rows = [r for r in _emoji_rows(paths["emoji.json"]) if skin_tones or not r[2]]
    folder = paths["img/google/64"]
    images = np.empty((len(rows), 64, 64, 3), dtype=np.uint8)
    for i, (_, image, _) in enumerate(rows):
        with Image.open(folder / image) as im:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        images[i] = np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha))  # over a white page
    base: dict[str, int] = {}
    return Emoji(
        images=images,
        names=[e["name"].lower() + (f": {tone}" if tone else "") for e, _, tone in rows],
        keywords=[tuple(k.replace("_", " ").replace("-", " ") for k in e["short_names"]) for e, _, _ in rows],
        categories=[e["category"] for e, _, _ in rows],
        subcategories=[e["subcategory"] for e, _, _ in rows],
        groups=np.array([base.setdefault(e["unified"], len(base)) for e, _, _ in rows], dtype=np.int64))


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
