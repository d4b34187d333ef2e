"""Fetching pinned files (datasets, and the weights registry's downloads): cache, mirror, download with
progress, sha256 verification.

A file reaches the cache only after its digest matched, via a temp file and a rename, so the cache
never holds a corrupt or truncated file. `ZUPU_DATA_MIRROR=DIR` takes files from a local copy laid
out like the cache instead of the network (tests point it at ../shared/data).

Digests are of the *content*: a `.gz` file is hashed after decompression (the gzip header carries a
timestamp and file name, so re-compressed mirrors differ byte-wise while the data does not), and a
`rows` file is hashed over its stripped data lines (a header line or CRLF endings do not count).

A `RemoteFolder` is many small files (3,786 emoji PNGs) pinned by one digest, of their manifest: the sorted
lines "<name> <sha256 of its bytes>". Its names come from a listing file fetched before it; the folder is
filled in a temp folder, verified whole, then renamed into the cache.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from zupu.errors import REFETCH, ChecksumError, DataUnavailable, TruncatedFile
from zupu.progress import progress


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the cache (and the mirror): "<dataset folder>/<file>"
    url: str
    form: str = "bytes"  # how the digest is taken: "bytes", "gunzip" or "rows" (see module doc)
    header: str = ""  # for "rows": a first line starting with this is a header, not data
    pinned: str = ""  # its sha256, where the registry listing it records hashes itself (else sha256.json's)
    size: int | None = None  # its length where recorded: a shorter file is reported as truncated

    @property
    def sha256(self) -> str:
        return self.pinned or checksums()[self.path]


@dataclass(frozen=True)
class RemoteFolder:
    path: str  # relative to the cache (and the mirror): "<dataset folder>/<sub folder>"
    url: str  # a file's address is url + "/" + its name
    listing: str  # the key of an earlier file of the same dataset that lists the folder's names
    names: Callable[[Path], list[str]]  # the listing file -> the names of the folder's files
    pinned: str = ""  # its manifest's sha256, where the registry records it (else sha256.json's)

    @property
    def sha256(self) -> str:
        return self.pinned or checksums()[self.path]


@cache
def checksums() -> dict[str, str]:
    return json.loads(resources.files("zupu.data").joinpath("sha256.json").read_text())


def cache_dir() -> Path:
    return Path(os.environ.get("ZUPU_CACHE") or Path.home() / ".cache" / "zupu")


def mirror_dir() -> Path | None:
    m = os.environ.get("ZUPU_DATA_MIRROR")
    return Path(m).expanduser().resolve() if m else None


def digest(path: Path, form: str, header: str = "") -> str:
    h = hashlib.sha256()
    if form == "gunzip":
        with gzip.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    elif form == "rows":
        lines = path.read_bytes().decode("utf-8").splitlines()
        rows = [ln.strip() for ln in lines if ln.strip()]
        if header and rows and rows[0].startswith(header):
            rows = rows[1:]
        h.update("\n".join(rows).encode())
    else:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _digest_or_none(path: Path, f: RemoteFile) -> str | None:
    """The digest, or None when the file cannot even be read as its form (truncated gzip...)."""
    try:
        return digest(path, f.form, f.header)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError):
        return None


def _copy(src, dst, total: int | None, label: str, quiet: bool = False) -> None:
    if quiet:
        shutil.copyfileobj(src, dst)
        return
    with progress(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:
        for chunk in iter(lambda: src.read(1 << 16), b""):
            dst.write(chunk)
            bar.update(len(chunk))


def verify(path: Path, f: RemoteFile, owner: str, source: str, kind: str = "dataset", fix: str = REFETCH) -> None:
    """Raise ChecksumError (TruncatedFile when shorter than recorded) unless `path` holds `f`'s content."""
    got = _digest_or_none(path, f)
    if got == f.sha256:
        return
    args = (owner, f.path, f.sha256, got or "unreadable", source, kind, fix)
    size = path.stat().st_size
    if f.size is not None and size < f.size:
        raise TruncatedFile(*args, size=size, expected_size=f.size)
    raise ChecksumError(*args)


def _pull(owner: str, f: RemoteFile, tmp: Path, kind: str, quiet: bool = False) -> str:
    """Write the file's bytes to `tmp`; return where they came from (`quiet`: no progress bar of its own)."""
    mirror = mirror_dir()
    label = f"{owner}: {Path(f.path).name}"
    if mirror is not None:
        src = mirror / f.path
        if not src.is_file():
            raise DataUnavailable(
                f"{kind} {owner!r}: {f.path} is not in the mirror ZUPU_DATA_MIRROR={mirror}; "
                f"add it there (canonical address {f.url}) or unset ZUPU_DATA_MIRROR to download"
            )
        with open(src, "rb") as s, open(tmp, "wb") as d:
            _copy(s, d, src.stat().st_size, label, quiet)
        return str(src)
    try:
        req = urllib.request.Request(f.url, headers={"User-Agent": "zupu"})
        with urllib.request.urlopen(req, timeout=60) as r, open(tmp, "wb") as d:
            size = r.headers.get("Content-Length")
            _copy(r, d, int(size) if size else None, label, quiet)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise DataUnavailable(
            f"{kind} {owner!r}: cannot download {f.url} ({reason}); connect to the internet, "
            f"or set ZUPU_DATA_MIRROR=DIR to a folder that holds {f.path}"
        ) from None
    return f.url


def fetch_file(owner: str, f: RemoteFile, kind: str = "dataset", area: str = "data") -> Path:
    """The verified local path of `f` (in the cache's `area` folder), downloading or copying from the mirror
    if needed; `owner` is the dataset (or weights entry) that lists it, `kind` says which in messages."""
    dest = cache_dir() / area / f.path
    if dest.is_file():
        if _digest_or_none(dest, f) == f.sha256:
            return dest
        dest.unlink()  # a corrupted cache entry is dropped and fetched again
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        verify(tmp, f, owner, _pull(owner, f, tmp, kind), kind)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return dest



def manifest_digest(folder: Path, names: Sequence[str]) -> str | None:
    """sha256 of the sorted lines "<name> <sha256 of the file>\\n"; None when a file is missing."""
    h = hashlib.sha256()
    for name in sorted(names):
        path = folder / name
        if not path.is_file():
            return None
        h.update(f"{name} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def fetch_folder(owner: str, f: RemoteFolder, names: Sequence[str], kind: str = "dataset",
                 area: str = "data") -> Path:
    """The verified local folder of `f` holding `names`, filled (from the mirror or the network) if needed."""
    dest = cache_dir() / area / f.path
    if dest.is_dir():
        if manifest_digest(dest, names) == f.sha256:
            return dest
        shutil.rmtree(dest)  # a corrupted or partial folder is dropped and fetched again
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    try:
        source = ""
        for name in progress(iterable=names, desc=f"{owner}: {Path(f.path).name}/", unit="file", leave=False):
            source = _pull(owner, RemoteFile(f"{f.path}/{name}", f"{f.url}/{name}"), tmp / name, kind, quiet=True)
        got = manifest_digest(tmp, names)
        if got != f.sha256:
            raise ChecksumError(owner, f.path, f.sha256, got or "incomplete", str(Path(source).parent), kind)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process filled it first
            if manifest_digest(dest, names) != f.sha256:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
