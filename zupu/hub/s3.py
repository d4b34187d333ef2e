"""LFS objects in an S3 bucket (AWS or any S3-compatible store), for `zupu hub serve --storage s3://bucket[/prefix]`.

Git repos stay on the `--data` disk; only LFS objects live in the bucket, as `<prefix>objects/<oid>`. The
endpoint, region and credentials come from the standard AWS settings (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE, ~/.aws/config), so MinIO, Ceph, R2 and the like work too.

An upload streams straight into an S3 multipart upload of the final key while it is hashed; the upload is
completed (which is when S3 makes the object appear, all at once) only if the bytes are exactly the
announced size and sha256, and aborted otherwise. An object smaller than one part is held in memory and
put in one request after the check. So nothing ever sits at `objects/<oid>` that is not those bytes; a
killed process leaves at most an unfinished multipart upload, which `sweep()` aborts on a later start once it
was initiated longer ago than the grace period (a fresh one may belong to another hub on the same prefix).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool

from zupu.errors import ZupuError
from zupu.hub.storage import PartSpool, stream, verified

PART = 8 << 20  # S3 wants parts of 5 MiB or more (but the last) and at most 10,000 of them


class S3Storage(PartSpool):
    def __init__(self, url: str, tmp: str | os.PathLike):
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ZupuError("--storage s3:// needs boto3: pip install 'zupu[hub]'") from None
        parts = urlsplit(url)
        self.bucket, prefix = parts.netloc, parts.path.strip("/")
        if parts.scheme != "s3" or not self.bucket:
            raise ZupuError(f"--storage {url!r} is not s3://bucket[/prefix]")
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = url
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=120,
                        max_pool_connections=32)
        self.client = boto3.session.Session().client("s3", config=config)
        self.endpoint = self.client.meta.endpoint_url
        self._call(self.client.head_bucket, Bucket=self.bucket)

    def key(self, oid: str) -> str:
        return f"{self.prefix}objects/{oid}"

    def _call(self, fn, **kwargs):
        """An S3 call whose configuration errors become one line naming the bucket, the endpoint and the fix."""
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        where = f"S3 bucket {self.bucket!r} at {self.endpoint}"
        try:
            return fn(**kwargs)
        except NoCredentialsError:
            raise ZupuError(f"{where}: no credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                            "(or AWS_PROFILE)") from None
        except EndpointConnectionError as e:
            raise ZupuError(f"{where}: endpoint unreachable ({e}); set AWS_ENDPOINT_URL to your S3 server "
                            "(e.g. http://127.0.0.1:9000) or check that it is running") from None
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket"):
                raise ZupuError(f"{where} does not exist; create it (aws s3 mb s3://{self.bucket}) "
                                "or fix the name in --storage") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ZupuError(f"{where}: access denied ({code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                                "and that they may read and write the bucket") from None
            raise ZupuError(f"{where}: {e}") from None
        except BotoCoreError as e:
            raise ZupuError(f"{where}: {e}") from None

    def sweep(self, older_than: float) -> None:
        """Abort the multipart uploads under this prefix idle for over `older_than` seconds (killed hubs left them;
        younger ones may be in flight at other hubs on the prefix), and clear tmp/ likewise."""
        super().sweep(older_than)
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than)
        pages = self.client.get_paginator("list_multipart_uploads")
        listing = self._call(pages.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}objects/").build_full_result)
        for up in listing.get("Uploads", []):
            ids = {"Bucket": self.bucket, "Key": up["Key"], "UploadId": up["UploadId"]}
            with self._unless_gone():  # completed or aborted meanwhile by the hub that owns it
                if up["Initiated"] <= cutoff and self._last_active(up, ids) <= cutoff:
                    self.client.abort_multipart_upload(**ids)

    def _last_active(self, up: dict, ids: dict) -> datetime:
        """When an unfinished upload last moved: its newest part (an upload in flight adds one every PART bytes),
        else its start."""
        parts = self.client.get_paginator("list_parts").paginate(**ids).build_full_result().get("Parts", [])
        return max([up["Initiated"], *(p["LastModified"] for p in parts)])

    @contextlib.contextmanager
    def _unless_gone(self):
        from botocore.exceptions import ClientError

        try:
            yield
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise

    def exists(self, oid: str, size: int | None = None) -> bool:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(oid))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return size is None or head["ContentLength"] == size

    async def read(self, oid: str, start: int, length: int) -> AsyncIterator[bytes]:
        if length <= 0:
            return
        r = await run_in_threadpool(self.client.get_object, Bucket=self.bucket, Key=self.key(oid),
                                    Range=f"bytes={start}-{start + length - 1}")
        body = r["Body"]
        try:
            async for chunk in stream(body.read, length):
                yield chunk
        finally:
            body.close()

    async def put(self, oid: str, size: int, chunks: AsyncIterator[bytes], max_size: int) -> None:
        key, part = self.key(oid), max(PART, -(-size // 10_000))
        buf, etags, upload = bytearray(), [], None
        try:
            async for chunk in verified(oid, size, chunks, max_size):
                buf += chunk
                while len(buf) >= part:
                    if upload is None:
                        r = await run_in_threadpool(self.client.create_multipart_upload, Bucket=self.bucket, Key=key)
                        upload = r["UploadId"]
                    etags.append(await self._upload_part(key, upload, len(etags) + 1, bytes(buf[:part])))
                    del buf[:part]
            # The bytes are the announced ones: only now may they appear under the key.
            if upload is None:
                await run_in_threadpool(self.client.put_object, Bucket=self.bucket, Key=key, Body=bytes(buf))
                return
            if buf:
                etags.append(await self._upload_part(key, upload, len(etags) + 1, bytes(buf)))
            done = {"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]}
            await run_in_threadpool(self.client.complete_multipart_upload, Bucket=self.bucket, Key=key,
                                    UploadId=upload, MultipartUpload=done)
            upload = None
        finally:
            if upload is not None:
                with contextlib.suppress(Exception):  # sweep() retries on the next start
                    await run_in_threadpool(self.client.abort_multipart_upload, Bucket=self.bucket, Key=key,
                                            UploadId=upload)

    async def _upload_part(self, key: str, upload: str, n: int, data: bytes) -> str:
        r = await run_in_threadpool(self.client.upload_part, Bucket=self.bucket, Key=key, UploadId=upload,
                                    PartNumber=n, Body=data)
        return r["ETag"]
