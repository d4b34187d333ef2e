"""Content-addressed storage for LFS objects in a local folder.

An upload is streamed into a temporary file in the same file system while its sha256 is computed;
only when the byte count and the hash match what the client announced is it renamed (atomically)
to `objects/<oid[:2]>/<oid[2:4]>/<oid>`. A short, tampered, oversized or interrupted upload leaves
nothing under `objects/` — its temporary file is removed, and a crash leaves only a `tmp/` file
that `sweep()` deletes on the next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from zupu.errors import ZupuError

CHUNK = 1 << 20


class UploadRejected(ZupuError):
    """An upload whose bytes do not match the announced oid/size (HTTP 400) or are too big (413)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class LocalStorage:
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

    def sweep(self) -> None:
        """Remove temporary files that a killed process left behind."""
        for p in self.tmp.iterdir():
            with contextlib.suppress(OSError):
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

    async def put(self, oid: str, size: int, chunks: AsyncIterator[bytes], max_size: int) -> None:
        """Stream `chunks` into the object `oid`; UploadRejected unless they are exactly `size` bytes hashing to it."""
        if size > max_size:
            raise UploadRejected(f"object of {size} bytes is over this hub's limit of {max_size} bytes", 413)
        sha, n = hashlib.sha256(), 0
        fd = None
        tmp = self.tmp / f"{oid}.{os.getpid()}.{id(chunks)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            async for chunk in chunks:
                n += len(chunk)
                if n > size:
                    raise UploadRejected(f"upload of {oid} sent more than the announced {size} bytes",
                                         413 if n > max_size else 400)
                sha.update(chunk)
                os.write(fd, chunk)
            if n != size:
                raise UploadRejected(f"upload of {oid} ended after {n} of {size} bytes; send it again")
            if sha.hexdigest() != oid:
                raise UploadRejected(f"upload claimed sha256 {oid} but its bytes hash to {sha.hexdigest()}")
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
