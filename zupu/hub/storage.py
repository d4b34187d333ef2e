"""Content-addressed storage for LFS objects: a local folder (`LocalStorage`) or an S3 bucket (`S3Storage`).

Both keep the same promise: an upload's sha256 is computed while its bytes arrive, and only an upload
of exactly the announced size and hash becomes the object `<oid>`. A short, tampered, oversized or
interrupted upload leaves no object; what it left in flight is removed at once, or, when the process was
killed, by `sweep()` on a later start once it is older than a grace period (other hubs sharing the store
may have uploads in flight).

Locally the bytes stream into `tmp/` and are renamed (atomically) to `objects/<oid[:2]>/<oid[2:4]>/<oid>`.
The parts of a multipart upload wait in `tmp/` in both stores and are then joined through `put`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

from starlette.concurrency import run_in_threadpool

from zupu.errors import ZupuError

CHUNK = 1 << 20


class UploadRejected(ZupuError):
    """An upload whose bytes do not match the announced oid/size (HTTP 400) or are too big (413)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Storage(Protocol):
    """What the server needs from an LFS object store."""

    tmp: Path  # local folder for uploads in flight (multipart parts, and local uploads)

    def sweep(self, older_than: float) -> None:
        """Remove what killed uploads left behind, if it is over `older_than` seconds old (called once at start)."""

    def exists(self, oid: str, size: int | None = None) -> bool:
        """Whether object `oid` is stored (and is `size` bytes, when given)."""

    async def put(self, oid: str, size: int, chunks: AsyncIterator[bytes], max_size: int) -> None:
        """Stream `chunks` into object `oid`; UploadRejected unless they are exactly `size` bytes hashing to it."""

    async def put_part(self, oid: str, upload: str, n: int, length: int, chunks: AsyncIterator[bytes]) -> str:
        """Store part `n` (exactly `length` bytes) of a multipart upload; its ETag."""

    async def assemble(self, oid: str, size: int, upload: str, etags: list[str], max_size: int) -> None:
        """Join the parts of a multipart upload into object `oid` (checked like `put`)."""

    def read(self, oid: str, start: int, length: int) -> AsyncIterator[bytes]:
        """`length` bytes of object `oid` from offset `start`."""


def open_storage(url: str | None, local_root: str | os.PathLike) -> Storage:
    """The store named by `--storage`: None for `local_root`, or `s3://bucket[/prefix]`."""
    if not url:
        return LocalStorage(local_root)
    if url.startswith("s3://"):
        from zupu.hub.s3 import S3Storage

        return S3Storage(url, Path(local_root) / "tmp")
    raise ZupuError(f"--storage {url!r}: give s3://bucket[/prefix], or leave it out for the --data folder")


async def verified(oid: str, size: int, chunks: AsyncIterator[bytes], max_size: int) -> AsyncIterator[bytes]:
    """`chunks`, checked: UploadRejected as soon as they run over `size` and, once they end, unless they were
    exactly `size` bytes hashing to `oid`. Code after a consumer's `async for` may publish the object."""
    if size > max_size:
        raise UploadRejected(f"object of {size} bytes is over this hub's limit of {max_size} bytes", 413)
    sha, n = hashlib.sha256(), 0
    async for chunk in chunks:
        n += len(chunk)
        if n > size:
            raise UploadRejected(f"upload of {oid} sent more than the announced {size} bytes",
                                 413 if n > max_size else 400)
        sha.update(chunk)
        yield chunk
    if n != size:
        raise UploadRejected(f"upload of {oid} ended after {n} of {size} bytes; send it again")
    if sha.hexdigest() != oid:
        raise UploadRejected(f"upload claimed sha256 {oid} but its bytes hash to {sha.hexdigest()}")


class PartSpool:
    """Multipart parts kept in a local folder until the completion call joins them through the store's `put`."""

    tmp: Path

    def sweep(self, older_than: float) -> None:
        # An upload in flight writes to its file (a local upload) or has just written it (a part waiting for the
        # completion call): its mtime is recent. A killed one's stops ageing.
        cutoff = time.time() - older_than
        for p in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                if p.stat().st_mtime <= cutoff:
                    p.unlink()

    def part_path(self, oid: str, upload: str, n: int) -> Path:
        return self.tmp / f"{oid}.{upload}.part{n}"

    async def put_part(self, oid: str, upload: str, n: int, length: int, chunks: AsyncIterator[bytes]) -> str:
        """Store part `n` (exactly `length` bytes) of a multipart upload; its ETag (md5 of the part, as S3 does)."""
        md5, got = hashlib.md5(usedforsecurity=False), 0
        final = self.part_path(oid, upload, n)
        tmp = final.with_name(final.name + f".{id(chunks)}")
        try:
            with open(tmp, "wb") as f:
                async for chunk in chunks:
                    got += len(chunk)
                    if got > length:
                        raise UploadRejected(f"part {n} of {oid} is longer than its {length} bytes")
                    md5.update(chunk)
                    f.write(chunk)
            if got != length:
                raise UploadRejected(f"part {n} of {oid} ended after {got} of {length} bytes; send it again")
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return md5.hexdigest()

    async def assemble(self, oid: str, size: int, upload: str, etags: list[str], max_size: int) -> None:
        """Join the parts of a multipart upload into object `oid` (checked like `put`); the parts are removed."""
        parts = [self.part_path(oid, upload, n) for n in range(1, len(etags) + 1)]
        try:
            for n, (path, etag) in enumerate(zip(parts, etags, strict=True), 1):
                if not path.is_file():
                    raise UploadRejected(f"part {n} of {oid} was never uploaded")
                md5 = hashlib.md5(usedforsecurity=False)
                with open(path, "rb") as f:
                    while block := f.read(CHUNK):
                        md5.update(block)
                if md5.hexdigest() != etag.strip('"'):
                    raise UploadRejected(f"part {n} of {oid}: ETag {etag} does not match the stored part")

            async def chunks() -> AsyncIterator[bytes]:
                for path in parts:
                    with open(path, "rb") as f:
                        while block := f.read(CHUNK):
                            yield block

            await self.put(oid, size, chunks(), max_size)
        finally:
            for path in parts:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()



async def stream(read: Callable[[int], bytes], length: int) -> AsyncIterator[bytes]:
    """Up to `length` bytes from a blocking `read(n)`, in 4 MiB chunks, each read off the event loop."""
    while length > 0:
        chunk = await run_in_threadpool(read, min(4 * CHUNK, length))
        if not chunk:
            break
        length -= len(chunk)
        yield chunk


class LocalStorage(PartSpool):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, oid: str) -> Path:
        return self.objects / oid[:2] / oid[2:4] / oid

    def exists(self, oid: str, size: int | None = None) -> bool:
        p = self.path(oid)
        return p.is_file() and (size is None or p.stat().st_size == size)

    async def read(self, oid: str, start: int, length: int) -> AsyncIterator[bytes]:
        with open(self.path(oid), "rb") as f:
            f.seek(start)
            async for chunk in stream(f.read, length):
                yield chunk

    async def put(self, oid: str, size: int, chunks: AsyncIterator[bytes], max_size: int) -> None:
        fd = None
        tmp = self.tmp / f"{oid}.{os.getpid()}.{id(chunks)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            async for chunk in verified(oid, size, chunks, max_size):
                os.write(fd, chunk)
            os.fsync(fd)
            os.close(fd)
            fd = None
            dest = self.path(oid)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        finally:
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
