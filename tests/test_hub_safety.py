"""Nothing lost, nobody let in: the hub's refusals, checked with raw HTTP where clients would not misbehave."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
import time

import pytest

from zupu.hub.server import Hub

HUB_OPTIONS = {"max_object_size": 1 << 20}  # the `live` hub's (tests/conftest.py)


@pytest.fixture(scope="module")
def tokens(live):
    return {"alice": live.token("alice"), "alice-read": live.token("alice", "read"), "bob": live.token("bob")}


def create(live, token, name, private=False):
    status, _, body = live.request("POST", "/api/repos/create",
                                   {"name": name, "visibility": "private" if private else "public"}, token=token)
    assert status == 200, body


def commit(live, token, repo, *ops, parent=None, branch="main"):
    header = {"summary": "test", **({"parentCommit": parent} if parent else {})}
    lines = [{"key": "header", "value": header}, *ops]
    body = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    return live.request("POST", f"/api/models/{repo}/commit/{branch}", body, token=token,
                        headers={"Content-Type": "application/x-ndjson"})


def add(path, data: bytes):
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


def batch(live, token, repo, oid, size, operation="upload"):
    status, _, body = live.request("POST", f"/{repo}.git/info/lfs/objects/batch",
                                   {"operation": operation, "transfers": ["basic"],
                                    "objects": [{"oid": oid, "size": size}]},
                                   token=token, headers={"Accept": "application/vnd.git-lfs+json"})
    assert status == 200, body
    return json.loads(body)["objects"][0]


def head(live, repo):
    return json.loads(live.request("GET", f"/api/models/{repo}/revision/main")[2])["sha"]


@pytest.mark.parametrize("path", ["../evil.txt", "a/../../evil.txt", "..\\evil.txt", "/etc/passwd", "C:/x.txt",
                                  ".git/config", "sub/.git/hooks/pre-receive", "a\x00b.txt", "a//b.txt", "./a.txt"])
def test_path_traversal_is_422(live, tokens, path):
    if live.request("GET", "/api/models/alice/paths")[0] == 404:
        create(live, tokens["alice"], "paths")
    before = head(live, "alice/paths")
    status, _, body = commit(live, tokens["alice"], "alice/paths", add(path, b"x"))
    assert status == 422, body
    status, _, _ = commit(live, tokens["alice"], "alice/paths", {"key": "deletedFile", "value": {"path": path}})
    assert status == 422
    assert head(live, "alice/paths") == before
    quoted = path.replace("/", "%2F").replace("\x00", "%00").replace("\\", "%5C")
    assert live.request("GET", f"/alice/paths/resolve/main/{quoted}")[0] in (404, 422)
    assert live.request("GET", "/alice/paths/resolve/main/..%2F..%2Fhub.sqlite")[0] == 422
    assert not any(p.name == "evil.txt" for p in live.hub.data.rglob("*"))


def test_read_token_cannot_write_and_private_is_invisible(live, tokens):
    create(live, tokens["alice"], "priv", private=True)
    assert commit(live, tokens["alice-read"], "alice/priv", add("x.txt", b"x"))[0] == 403
    assert live.request("POST", "/api/repos/create", {"name": "new"}, token=tokens["alice-read"])[0] == 403
    for token in (None, tokens["bob"]):
        for method, path in (("GET", "/api/models/alice/priv"), ("GET", "/alice/priv/resolve/main/.gitattributes"),
                             ("GET", "/api/models/alice/priv/tree/main"), ("GET", "/api/models/alice/priv/refs")):
            status, h, _ = live.request(method, path, token=token)
            assert status == 404 and h["x-error-code"] == "RepoNotFound", (method, path, token)
        # Anonymous: 401 before the body is read, for any repo, so it tells nothing of this one.
        assert commit(live, token, "alice/priv", add("x.txt", b"x"))[0] == (404 if token else 401)
    assert live.request("GET", "/api/models/alice/priv", token=tokens["alice-read"])[0] == 200
    assert live.request("GET", "/api/models/alice/priv", token="zupu_not-a-token")[0] == 401


def test_lfs_object_of_another_repo_cannot_be_claimed(live, tokens):
    create(live, tokens["alice"], "owner")
    create(live, tokens["bob"], "thief")
    data = os.urandom(4096)
    oid = hashlib.sha256(data).hexdigest()
    obj = batch(live, tokens["alice"], "alice/owner", oid, len(data))
    assert live.request("PUT", obj["actions"]["upload"]["href"], data)[0] == 200
    assert live.request("POST", obj["actions"]["verify"]["href"], {"oid": oid, "size": len(data)})[0] == 200
    lfs = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(data)}}
    assert commit(live, tokens["alice"], "alice/owner", lfs)[0] == 200

    # Knowing the oid gets bob nothing: no commit, no download, and the batch API wants the bytes.
    status, _, body = commit(live, tokens["bob"], "bob/thief", lfs)
    assert status == 422 and b"never uploaded" in body
    assert "error" in batch(live, tokens["bob"], "bob/thief", oid, len(data), "download")
    assert "upload" in batch(live, tokens["bob"], "bob/thief", oid, len(data))["actions"]
    # A signed link for one repo does not work for another, nor when altered.
    href = obj["actions"]["upload"]["href"]
    parts = href.split("/")
    parts[parts.index("upload") + 1] = str(int(parts[parts.index("upload") + 1]) + 1)
    assert live.request("PUT", "/".join(parts), data)[0] == 403
    assert live.request("PUT", href[:-1] + ("0" if href[-1] != "0" else "1"), data)[0] == 403


def test_tampered_short_and_oversized_uploads_are_rejected(live, tokens):
    create(live, tokens["alice"], "uploads")
    data = os.urandom(10_000)
    oid = hashlib.sha256(data).hexdigest()
    href = batch(live, tokens["alice"], "alice/uploads", oid, len(data))["actions"]["upload"]["href"]
    tampered = bytes([data[0] ^ 1]) + data[1:]
    assert live.request("PUT", href, tampered)[0] == 400
    assert live.request("PUT", href, data[:-1])[0] == 400
    assert live.request("PUT", href, data + b"!")[0] == 400
    assert not live.hub.storage.exists(oid)
    assert list(live.hub.storage.tmp.iterdir()) == []
    lfs = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(data)}}
    assert commit(live, tokens["alice"], "alice/uploads", lfs)[0] == 422
    assert live.request("PUT", href, data)[0] == 200 and live.hub.storage.exists(oid, len(data))

    big = 2 << 20  # over the test hub's 1 MiB object limit
    over = batch(live, tokens["alice"], "alice/uploads", "ab" * 32, big)
    assert over["error"]["code"] == 413
    href = live.hub.sign("upload", 1, "cd" * 32, big)
    assert live.request("PUT", href, b"x" * 1024, headers={"Content-Length": "1024"})[0] == 413
    status, _, _ = live.request("POST", "/api/models/alice/uploads/commit/main", b"x" * 10,
                                token=tokens["alice"], headers={"Content-Type": "application/x-ndjson"})
    assert status == 400


def test_a_starting_hub_keeps_uploads_in_flight_and_sweeps_old_leftovers(live, tokens):
    """Scale-out: another hub starting on the same --data must not break an upload in flight at this one; what a
    hub killed two days ago left goes (default grace: a day), and with a grace of 0 what was killed just now."""
    create(live, tokens["alice"], "inflight")
    data = os.urandom(300_000)
    oid = hashlib.sha256(data).hexdigest()
    href = batch(live, tokens["alice"], "alice/inflight", oid, len(data))["actions"]["upload"]["href"]
    tmp = live.hub.storage.tmp
    old = tmp / f"{'ab' * 32}.1.2"
    old.write_bytes(b"left by a hub killed two days ago")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(f"PUT {href.split(str(live.port), 1)[1]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:100_000])
        deadline = time.monotonic() + 10
        while not list(tmp.glob(f"{oid}.*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp.glob(f"{oid}.*")), "the upload never reached lfs/tmp/"
        Hub(live.hub.data)
        assert not old.exists() and list(tmp.glob(f"{oid}.*"))
        sock.sendall(data[100_000:])
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    assert live.hub.storage.exists(oid, len(data))
    killed = tmp / f"{'cd' * 32}.3.4"
    killed.write_bytes(b"left by a hub killed just now")
    Hub(live.hub.data, sweep_after=0)
    assert not killed.exists()


def test_killed_upload_leaves_no_object_and_no_commit(live, tokens):
    create(live, tokens["alice"], "killed")
    before = head(live, "alice/killed")
    data = os.urandom(300_000)
    oid = hashlib.sha256(data).hexdigest()
    href = batch(live, tokens["alice"], "alice/killed", oid, len(data))["actions"]["upload"]["href"]
    path = href.split(str(live.port), 1)[1]
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n\r\n".encode())
        sock.sendall(data[:100_000])
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while list(live.hub.storage.tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(live.hub.storage.tmp.iterdir()) == []
    assert not live.hub.storage.exists(oid)
    lfs = {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(data)}}
    assert commit(live, tokens["alice"], "alice/killed", lfs)[0] == 422
    assert head(live, "alice/killed") == before


def test_concurrent_committers_never_lose_a_commit(live, tokens):
    create(live, tokens["alice"], "race")
    base = head(live, "alice/race")
    results: list[int] = []

    def racer(i: int, parent: str | None) -> None:
        results.append(commit(live, tokens["alice"], "alice/race", add(f"f{i}.txt", b"%d" % i), parent=parent)[0])

    # Everyone builds on the same parent: exactly one lands, the others hear 412.
    threads = [threading.Thread(target=racer, args=(i, base)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [200] + [412] * 5
    # Without a parent every commit lands on top of the one before.
    results.clear()
    threads = [threading.Thread(target=racer, args=(i, None)) for i in range(10, 16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 6
    status, _, body = live.request("GET", "/api/models/alice/race/tree/main")
    names = {e["path"] for e in json.loads(body)}
    assert {f"f{i}.txt" for i in range(10, 16)} <= names and len(names) == 8  # + .gitattributes + the 412 winner
    commits = json.loads(live.request("GET", "/api/models/alice/race/commits/main")[2])
    assert len(commits) == 8
