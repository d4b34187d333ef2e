"""The hub with its LFS objects in S3 (`--storage s3://bucket/prefix`), against moto's S3 server on 127.0.0.1.

The same promises as the local store: uploads are verified before they appear under `objects/<oid>`, a
bad or killed upload leaves nothing there (nor an unfinished multipart upload), objects belong to repos,
and downloads honour Range. Driven with the real `huggingface_hub` client and, when installed, git-lfs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("boto3", reason="the S3 store needs boto3 (pip install -e '.[hub]')")
pytest.importorskip("moto.server", reason="these tests need moto's S3 server (pip install -e '.[test]')")

import boto3  # noqa: E402
from hub_live import LiveHub  # noqa: E402
from huggingface_hub import HfApi, constants, hf_hub_download, hf_hub_url, snapshot_download  # noqa: E402
from huggingface_hub.file_download import http_get  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402
from test_hub_git import git, remote  # noqa: E402

from zupu.cli import main  # noqa: E402
from zupu.hub.server import Hub  # noqa: E402

BUCKET, PREFIX = "zupu-lfs", "hub"
STORAGE = f"s3://{BUCKET}/{PREFIX}"
HAS_GIT_LFS = shutil.which("git") is not None and subprocess.run(["git", "lfs", "version"],
                                                                  capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 on a free port, the AWS_* environment pointing at it, and a client for looking into the bucket."""
    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        missing = str(tmp_path_factory.getbasetemp() / "no-aws-config")
        for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": missing,
                           "AWS_SHARED_CREDENTIALS_FILE": missing}.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
            mp.delenv(key, raising=False)
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    server.stop()


@pytest.fixture(scope="module")
def live(s3, tmp_path_factory):
    server = LiveHub(tmp_path_factory.mktemp("hub"), storage=STORAGE, max_object_size=32 << 20)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_xet(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def stored(s3) -> dict[str, int]:
    """oid -> size of every object under the hub's prefix."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    out = {}
    for page in pages:
        for o in page.get("Contents", []):
            assert o["Key"].startswith(f"{PREFIX}/objects/"), o["Key"]  # nothing but objects, no temp keys
            out[o["Key"].rsplit("/", 1)[1]] = o["Size"]
    return out


def unfinished(s3) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def batch_upload(live, token, repo, data: bytes) -> str:
    status, _, body = live.request("POST", f"/{repo}.git/info/lfs/objects/batch",
                                   {"operation": "upload", "transfers": ["basic"],
                                    "objects": [{"oid": sha(data), "size": len(data)}]}, token=token)
    assert status == 200, body
    return json.loads(body)["objects"][0]["actions"]["upload"]["href"]


def test_hf_client_uploads_into_s3_and_downloads_with_range(live, s3, tmp_path):
    api = HfApi(endpoint=live.url, token=live.token("alice"))
    api.create_repo("alice/s3")
    weights = os.urandom(200_000)  # one put_object
    big = os.urandom(12 << 20)  # an S3 multipart upload of 8 + 4 MiB, streamed while hashed
    folder = tmp_path / "up"
    folder.mkdir()
    (folder / "config.json").write_text('{"n": 1}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "big.bin").write_bytes(big)
    api.upload_folder(repo_id="alice/s3", folder_path=folder)

    objs = stored(s3)
    assert objs[sha(weights)] == len(weights) and objs[sha(big)] == len(big)
    assert unfinished(s3) == []
    assert not any((live.hub.data / "lfs").rglob("objects/*")), "LFS bytes belong in the bucket, not on disk"

    def download(name, **kw):
        return Path(hf_hub_download("alice/s3", name, endpoint=live.url, cache_dir=tmp_path / "c", **kw)).read_bytes()

    assert download("big.bin") == big and download("model.safetensors") == weights
    assert download("config.json") == b'{"n": 1}'
    # A range across the first S3 part's end, and the client's own resume (Range: bytes=N-).
    a, b = (8 << 20) - 1000, (8 << 20) + 999
    status, h, body = live.request("GET", "/alice/s3/resolve/main/big.bin", headers={"Range": f"bytes={a}-{b}"})
    assert status == 206 and body == big[a:b + 1] and h["content-range"] == f"bytes {a}-{b}/{len(big)}"
    status, _, body = live.request("GET", "/alice/s3/resolve/main/big.bin", headers={"Range": "bytes=-7"})
    assert status == 206 and body == big[-7:]
    half = io.BytesIO(big[: 5 << 20])
    half.seek(0, io.SEEK_END)
    http_get(hf_hub_url("alice/s3", "big.bin", endpoint=live.url), half, resume_size=5 << 20,
             expected_size=len(big))
    assert half.getvalue() == big

    snap = snapshot_download("alice/s3", endpoint=live.url, cache_dir=tmp_path / "snap")
    assert (Path(snap) / "big.bin").read_bytes() == big
    assert sorted(p.name for p in Path(snap).iterdir()) == [".gitattributes", "big.bin", "config.json",
                                                           "model.safetensors"]


def test_hf_multipart_transfer_into_s3(live, s3, tmp_path):
    api = HfApi(endpoint=live.url, token=live.token("alice"))
    api.create_repo("alice/parts")
    live.hub.multipart_chunk = 64 << 10
    try:
        blob = os.urandom(200_000)  # 4 parts of at most 64 KiB, joined and checked, then put into the bucket
        api.upload_file(path_or_fileobj=blob, path_in_repo="w.safetensors", repo_id="alice/parts")
    finally:
        live.hub.multipart_chunk = 64 << 20
    assert stored(s3)[sha(blob)] == len(blob)
    assert list(live.hub.storage.tmp.iterdir()) == [] and unfinished(s3) == []
    got = hf_hub_download("alice/parts", "w.safetensors", endpoint=live.url, cache_dir=tmp_path / "c")
    assert Path(got).read_bytes() == blob


@pytest.mark.skipif(not HAS_GIT_LFS, reason="git-lfs is not installed (apt-get install git-lfs; "
                                            ".ci/hub-services.sh does)")
def test_git_lfs_push_and_clone_through_s3(live, s3, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for args in (["lfs", "install", "--skip-repo"], ["config", "--global", "user.name", "Git User"],
                 ["config", "--global", "user.email", "git@example.org"],
                 ["config", "--global", "lfs.locksverify", "false"]):
        git(*args)
    token = live.token("carol")
    HfApi(endpoint=live.url, token=token).create_repo("carol/git")
    work = tmp_path / "work"
    git("clone", "-q", remote(live, "carol/git", token), str(work))
    pushed = os.urandom(300_000)
    (work / "w.bin").write_bytes(pushed)  # *.bin is LFS in the default .gitattributes
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "lfs via git", cwd=work)
    git("push", "-q", cwd=work)
    assert stored(s3)[sha(pushed)] == len(pushed)
    again = tmp_path / "again"
    git("clone", "-q", remote(live, "carol/git", token), str(again))
    assert (again / "w.bin").read_bytes() == pushed  # smudged from the bucket, not a pointer


@pytest.mark.parametrize("size", [10_000, 9 << 20], ids=["one-put", "multipart"])
def test_bad_and_killed_uploads_leave_nothing_in_the_bucket(live, s3, size):
    token = live.token("dave")
    repo = f"dave/bad-{size}"
    HfApi(endpoint=live.url, token=token).create_repo(repo)
    data = os.urandom(size)
    oid = sha(data)
    href = batch_upload(live, token, repo, data)
    for body in (bytes([data[0] ^ 1]) + data[1:], data[:-1], data + b"!"):
        assert live.request("PUT", href, body)[0] == 400
        assert oid not in stored(s3) and unfinished(s3) == []

    path = href.split(str(live.port), 1)[1]
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n\r\n".encode())
        sock.sendall(data[: len(data) * 19 // 20])  # past the first 8 MiB part when multipart
        time.sleep(0.5)
    deadline = time.monotonic() + 15
    while unfinished(s3) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert unfinished(s3) == [] and oid not in stored(s3)
    lfs = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": size}}
    body = b"".join(json.dumps(x).encode() + b"\n" for x in ({"key": "header", "value": {"summary": "x"}}, lfs))
    assert live.request("POST", f"/api/models/{repo}/commit/main", body, token=token,
                        headers={"Content-Type": "application/x-ndjson"})[0] == 422

    assert live.request("PUT", href, data)[0] == 200
    assert stored(s3)[oid] == size
    assert live.request("POST", f"/api/models/{repo}/commit/main", body, token=token,
                        headers={"Content-Type": "application/x-ndjson"})[0] == 200

    # Knowing the oid gets another repo nothing: no commit, no download link.
    thief = live.token("mallory")
    HfApi(endpoint=live.url, token=thief).create_repo(f"mallory/steal-{size}")
    status, _, msg = live.request("POST", f"/api/models/mallory/steal-{size}/commit/main", body, token=thief,
                                  headers={"Content-Type": "application/x-ndjson"})
    assert status == 422 and b"never uploaded" in msg
    status, _, answer = live.request("POST", f"/mallory/steal-{size}.git/info/lfs/objects/batch",
                                     {"operation": "download", "objects": [{"oid": oid, "size": size}]}, token=thief)
    assert status == 200 and "error" in json.loads(answer)["objects"][0]


def test_oversized_upload_is_413_and_stores_nothing(live, s3):
    token = live.token("erin")
    HfApi(endpoint=live.url, token=token).create_repo("erin/big")
    href = live.hub.sign("upload", 1, "cd" * 32, 40 << 20)  # over the test hub's 32 MiB limit
    assert live.request("PUT", href, b"x" * 1024)[0] == 413
    assert "cd" * 32 not in stored(s3) and unfinished(s3) == []


def test_start_sweeps_uploads_a_killed_hub_left(s3, tmp_path):
    key = f"{PREFIX}/objects/{'ef' * 32}"
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=1, Body=b"x" * (5 << 20))
    assert unfinished(s3) == [key]
    Hub(tmp_path / "restarted", storage=STORAGE, sweep_after=0)  # the default grace is a day
    assert unfinished(s3) == [] and "ef" * 32 not in stored(s3)


def test_start_keeps_uploads_in_flight_at_other_hubs(s3, tmp_path):
    """Hubs sharing a prefix (scale-out): one starting leaves a fresh multipart upload alone, which then completes.
    (moto dates every upload's start 2010-11-10, so it is the part just sent that shows the upload alive.)"""
    data = os.urandom(1000)
    key = f"{PREFIX}/objects/{sha(data)}"
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=1, Body=data)["ETag"]
    Hub(tmp_path / "another", storage=STORAGE)
    assert unfinished(s3) == [key]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert stored(s3)[sha(data)] == len(data)
    s3.delete_object(Bucket=BUCKET, Key=key)


def test_start_errors_name_the_bucket_endpoint_and_fix(s3, tmp_path, monkeypatch, capsys):
    def serve(storage: str) -> str:
        assert main(["hub", "serve", "--data", str(tmp_path / "d"), "--port", "1", "--storage", storage]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        return err

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    err = serve("s3://no-such-bucket/x")
    assert "'no-such-bucket'" in err and endpoint in err and "create it" in err
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    err = serve(STORAGE)
    assert closed in err and "unreachable" in err and "AWS_ENDPOINT_URL" in err
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    err = serve(STORAGE)
    assert BUCKET in err and "no credentials" in err and "AWS_ACCESS_KEY_ID" in err
    assert "s3://bucket" in serve("s3://")
