"""The dataset viewer: configs, splits, schema and rows of a dataset repo, computed from its files.

Which files make which split follows what the `datasets` library does with the same repo: the card's YAML
`configs` (`data_files` as a path, a list, or a list of `{split, path}`) when it has them, else one
"default" config whose splits come from the file names (`train`, `test`, `validation`... as a folder or a
name part; everything else is `train`). Parquet is read by pyarrow, CSV and JSON Lines by pyarrow's readers;
an image folder becomes rows of (image, label from the parent folder). Images are shown as thumbnails,
inlined as `data:` PNGs, since the pages run under a CSP that loads nothing from elsewhere.

A bad file or card never breaks the page: its split (or the whole viewer, for a card whose YAML does not
parse) carries an error message instead of rows, and everything else is shown.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import io
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from zupu.hub import gitrepo
from zupu.hub.storage import Storage

ROWS_PER_PAGE = 20
FIRST_ROWS = 5  # rows of each split on the overview
FILE_LIMIT = 64 << 20  # bytes: a larger data file is listed but not read
THUMB = 64  # pixels: the longer side of an image thumbnail
TEXT_CELL = 300  # characters of a cell shown
TABLE_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
SPLIT_WORDS = {"train": "train", "training": "train", "test": "test", "testing": "test", "eval": "test",
               "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation"}


class ViewerError(Exception):
    """What the viewer says instead of rows: a card or file it cannot read, in words for a person."""


@dataclass
class Split:
    config: str
    name: str
    files: list[gitrepo.Entry]
    error: str | None = None


@dataclass
class Rows:
    columns: list[tuple[str, str]]  # (name, type)
    rows: list[list[dict[str, Any]]]  # cells: {"text": ...} or {"image": data URL}
    total: int
    offset: int
    errors: list[str] = field(default_factory=list)


def _suffix(path: str) -> str:
    return ("." + path.rsplit(".", 1)[-1].lower()) if "." in path.rsplit("/", 1)[-1] else ""


def is_data(path: str) -> bool:
    return _suffix(path) in TABLE_SUFFIXES or _suffix(path) in IMAGE_SUFFIXES


def _split_of(path: str) -> str:
    for part in re.split(r"[/_.\-]", path.lower()):
        if part in SPLIT_WORDS:
            return SPLIT_WORDS[part]
    return "train"


def splits(meta: dict[str, Any] | None, files: list[gitrepo.Entry]) -> list[Split]:
    """The (config, split) pairs of a repo, with their data files, from its card metadata and file list.
    Raises ViewerError for `configs` metadata of the wrong shape."""
    data = [f for f in files if f.kind == "file" and is_data(f.path) and not f.path.startswith(".")]
    configs = (meta or {}).get("configs")
    if configs is None:
        by_split: dict[str, list[gitrepo.Entry]] = {}
        for f in data:
            by_split.setdefault(_split_of(f.path), []).append(f)
        order = ["train", "validation", "test"]
        return [Split("default", s, by_split[s]) for s in sorted(by_split, key=order.index)]
    if not isinstance(configs, list):
        raise ViewerError("the card's `configs` must be a list of {config_name, data_files}")
    out = []
    for c in configs:
        if not isinstance(c, dict) or not isinstance(c.get("config_name", "default"), str):
            raise ViewerError("each entry of the card's `configs` needs a config_name and data_files")
        name, spec = c.get("config_name", "default"), c.get("data_files")
        if isinstance(spec, (str, dict)):
            spec = [spec]
        if not isinstance(spec, list) or not spec:
            raise ViewerError(f"config {name!r}: data_files must be a path, a list of paths, or a list of "
                              "{split, path}")
        patterns: dict[str, list[str]] = {}
        for item in spec:
            split, paths = ("train", item) if isinstance(item, str) else (
                (item.get("split", "train"), item.get("path")) if isinstance(item, dict) else (None, None))
            paths = [paths] if isinstance(paths, str) else paths
            if not isinstance(split, str) or not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ViewerError(f"config {name!r}: data_files entries need a split name and a path (or paths)")
            patterns.setdefault(split, []).extend(paths)
        for split, pats in patterns.items():
            matched = [f for f in data if any(fnmatch.fnmatch(f.path, p.strip("/")) or
                                              f.path.startswith(p.strip("/").rstrip("*") + "/") for p in pats)]
            out.append(Split(name, split, matched, None if matched else f"no file matches {', '.join(pats)}"))
    return out


def file_bytes(git: gitrepo.Repo, storage: Storage, e: gitrepo.Entry, limit: int | None = FILE_LIMIT) -> bytes:
    """The content of file `e` (an LFS file's object from storage); ViewerError past `limit` or if missing."""
    size = e.lfs[1] if e.lfs else e.size
    if limit is not None and size > limit:
        raise ViewerError(f"{e.path} is {size} bytes; the viewer reads files of up to {FILE_LIMIT} bytes")
    if not e.lfs:
        return git.blob(e.oid)
    oid, size = e.lfs
    if not storage.exists(oid, size):
        raise ViewerError(f"the LFS object of {e.path} is missing on this hub")

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in storage.read(oid, 0, size)])

    return asyncio.run(collect())  # a worker thread, no event loop of its own: a short one for this read


_TABLES: OrderedDict[str, Any] = OrderedDict()  # content id -> parsed table: a file is parsed once, not per page
_TABLES_LOCK = threading.Lock()
CACHED_TABLES = 16


def _table(git: gitrepo.Repo, storage: Storage, e: gitrepo.Entry):
    key = e.lfs[0] if e.lfs else e.oid
    with _TABLES_LOCK:
        if key in _TABLES:
            _TABLES.move_to_end(key)
            return _TABLES[key]
    table = _parse(e.path, file_bytes(git, storage, e))
    with _TABLES_LOCK:
        _TABLES[key] = table
        while len(_TABLES) > CACHED_TABLES:
            _TABLES.popitem(last=False)
    return table


def _parse(path: str, data: bytes):
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet as pq

    kind = TABLE_SUFFIXES[_suffix(path)]
    try:
        if kind == "parquet":
            return pq.read_table(io.BytesIO(data))
        if kind == "csv":
            return pyarrow.csv.read_csv(io.BytesIO(data))
        return pyarrow.json.read_json(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as e:
        what = {"parquet": "a Parquet file", "csv": "CSV", "json": "JSON Lines"}[kind]
        raise ViewerError(f"{path} is not {what} that pyarrow can read: {e}") from None


def thumbnail(data: bytes) -> str:
    """A PNG data URL of at most THUMB pixels a side; ViewerError if the bytes are not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.thumbnail((THUMB, THUMB))
        out = io.BytesIO()
        img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB").save(out, format="PNG")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ViewerError(f"not an image: {e}") from None
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _cell(value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and isinstance(value.get("bytes"), bytes):  # datasets' Image feature
        try:
            return {"image": thumbnail(value["bytes"])}
        except ViewerError as e:
            return {"text": str(e)}
    if isinstance(value, bytes):
        return {"text": f"<{len(value)} bytes>"}
    text = "" if value is None else str(value)
    return {"text": text if len(text) <= TEXT_CELL else text[:TEXT_CELL] + "…"}


def rows(git: gitrepo.Repo, storage: Storage, split: Split, offset: int, length: int) -> Rows:
    """Rows offset..offset+length of `split` (over its files in path order), its schema and total row count."""
    if split.error:
        raise ViewerError(split.error)
    files = sorted(split.files, key=lambda e: e.path)
    images = [f for f in files if _suffix(f.path) in IMAGE_SUFFIXES]
    tables = [f for f in files if _suffix(f.path) in TABLE_SUFFIXES]
    if images and not tables:  # an image folder: (image, label) rows, the label from the parent folder
        out = []
        for f in images[offset:offset + length]:
            try:
                cell = {"image": thumbnail(file_bytes(git, storage, f))}
            except ViewerError as e:
                cell = {"text": f"{f.path}: {e}"}
            label = f.path.rsplit("/", 2)[-2] if f.path.count("/") >= 1 else ""
            out.append([cell, {"text": label}])
        return Rows([("image", "image"), ("label", "string")], out, len(images), offset)
    columns: list[tuple[str, str]] | None = None
    out, total, errors = [], 0, []
    for f in tables:
        try:
            table = _table(git, storage, f)
        except ViewerError as e:
            errors.append(str(e))
            continue
        if columns is None:
            columns = [(n, _type_name(t)) for n, t in zip(table.schema.names, table.schema.types, strict=True)]
        lo, hi = max(0, offset - total), min(table.num_rows, offset + length - total)
        if lo < hi and len(out) < length:
            for record in table.slice(lo, hi - lo).to_pylist():
                out.append([_cell(record.get(n)) for n, _ in columns])
        total += table.num_rows
    if columns is None:
        raise ViewerError("; ".join(errors) or "this split has no readable file")
    return Rows(columns, out, total, offset, errors)


def _type_name(t) -> str:
    s = str(t)
    return "image" if s.startswith("struct<bytes: binary") else s


def repo_splits(git: gitrepo.Repo, sha: str) -> list[Split]:
    """The splits of a dataset repo at commit `sha`; ViewerError when its card's YAML is unusable."""
    from zupu.hub.web import CARD_LIMIT, split_front_matter

    meta = None
    e = git.entry(sha, "README.md")
    if e is not None and e.kind == "file" and not e.lfs and e.size <= CARD_LIMIT:
        meta, error, _ = split_front_matter(git.blob(e.oid).decode("utf-8", errors="replace"))
        if error:
            raise ViewerError(f"README.md: {error}; fix the card to see the dataset viewer")
    return splits(meta, git.ls(sha, recursive=True))


def find(all_splits: list[Split], config: str, split: str) -> Split:
    for s in all_splits:
        if s.config == config and s.name == split:
            return s
    raise ViewerError(f"no split {split!r} in config {config!r}; this dataset has "
                      + ", ".join(f"{s.config}/{s.name}" for s in all_splits) if all_splits else
                      "this dataset has no data files the viewer reads (parquet, csv, jsonl, json, images)")
