"""The hub against malformed input, oversized requests and hostile pages (issue 22), over raw HTTP.

Every malformed input gets a 4xx in the Hub's error shape (`{"error": ...}` and X-Error-Message), never
a 500; every request's work is bounded (body and header sizes, YAML, Markdown, commit locking, paging).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from zupu.hub import limits

HUB_OPTIONS = {"max_object_size": 1 << 20, "max_commit_bytes": 4 << 20}


@pytest.fixture(scope="module")
def alice(live):
    token = live.token("alice")
    for name in ("fz", "dos"):
        status, _, body = live.request("POST", "/api/repos/create", {"name": name}, token=token)
        assert status == 200, body
    return token


def ndjson(*lines) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def add(path: str, data: bytes) -> dict:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


def commit(live, token, repo, *ops, summary="test", branch="main"):
    return live.request("POST", f"/api/models/{repo}/commit/{branch}",
                        ndjson({"key": "header", "value": {"summary": summary}}, *ops), token=token,
                        headers={"Content-Type": "application/x-ndjson"})


def assert_hub_error(status: int, headers: dict, body: bytes, what) -> None:
    assert 400 <= status < 500, (what, status, body[:300])
    assert isinstance(json.loads(body)["error"], str) and headers.get("x-error-message"), (what, body[:300])


# --- wrong statuses ----------------------------------------------------------------------------------------
def _leaves(value, path=()):
    """(path, value) of every scalar or empty container inside a JSON body."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path, value


def _with(value, path, new):
    if not path:
        return new
    out = dict(value) if isinstance(value, dict) else list(value)
    out[path[0]] = _with(value[path[0]], path[1:], new)
    return out


def _same_type(a, b) -> bool:
    return type(a) is type(b)


WRONG = (7, True, "s", [1], {"a": 1})


def test_every_json_field_of_every_endpoint_with_a_wrong_type_is_a_4xx(live, alice):
    zeros = "0" * 64
    complete = live.hub.sign("complete", 1, zeros, 10)
    json_endpoints = [
        ("POST", "/api/repos/create", {"name": "fz-new", "organization": "alice", "type": "model",
                                       "private": False, "visibility": "public"}),
        ("DELETE", "/api/repos/delete", {"name": "none", "organization": "alice", "type": "model"}),
        ("POST", "/api/repos/move", {"fromRepo": "alice/none", "toRepo": "alice/fz2", "type": "model"}),
        ("POST", "/api/validate-yaml", {"content": "---\na: 1\n---\n"}),
        ("PUT", "/api/models/alice/fz/settings", {"private": False, "visibility": "public"}),
        ("POST", "/api/models/alice/fz/paths-info/main", {"paths": ["a.txt"], "expand": True}),
        ("POST", "/api/models/alice/fz/preupload/main", {"files": [{"path": "a.txt", "sample": "", "size": 1}]}),
        ("POST", "/api/models/alice/fz/branch/b1", {"startingPoint": "main"}),
        ("POST", "/api/models/alice/fz/tag/main", {"tag": "t1", "message": "m"}),
        ("POST", "/alice/fz.git/info/lfs/objects/batch",
         {"operation": "download", "transfers": ["basic"], "objects": [{"oid": zeros, "size": 1}]}),
        ("POST", complete, {"oid": zeros, "parts": [{"partNumber": 1, "etag": "x"}]}),
    ]
    tried = 0
    for method, url, body in json_endpoints:
        for path, value in [((), body), *_leaves(body)]:
            for wrong in WRONG:
                if _same_type(wrong, value):
                    continue
                status, headers, out = live.request(method, url, _with(body, path, wrong)
                                                    if path else json.dumps(wrong).encode(), token=alice,
                                                    headers={"Content-Type": "application/json"})
                tried += 1
                if url.endswith("/batch") and status == 200:  # the LFS API answers per object
                    objs = json.loads(out)["objects"]
                    assert all("error" in o for o in objs) or path == ("transfers", 0), (path, wrong, out)
                    continue
                assert_hub_error(status, headers, out, (method, url, path, wrong))
    # The commit endpoint: NDJSON lines, each field of each operation.
    ops = [{"key": "header", "value": {"summary": "s", "description": "d", "parentCommit": "0" * 40}},
           add("a.txt", b"a"),
           {"key": "lfsFile", "value": {"path": "w.bin", "oid": zeros, "size": 1, "algo": "sha256"}},
           {"key": "deletedFile", "value": {"path": "a.txt"}},
           {"key": "deletedFolder", "value": {"path": "sub/"}}]
    for i, op in enumerate(ops):
        for path, value in [((), op["value"]), *_leaves(op["value"], ())]:
            for wrong in WRONG:
                if _same_type(wrong, value):
                    continue
                lines = [*ops[:i], {"key": op["key"], "value": _with(op["value"], path, wrong)}, *ops[i + 1:]]
                status, headers, out = live.request("POST", "/api/models/alice/fz/commit/main", ndjson(*lines),
                                                    token=alice, headers={"Content-Type": "application/x-ndjson"})
                tried += 1
                assert_hub_error(status, headers, out, ("commit", op["key"], path, wrong))
    assert tried > 150


def test_malformed_requests_get_4xx_in_the_error_shape(live, alice):
    for status, headers, body in (
        live.request("GET", "/api/models?limit=abc"),
        live.request("POST", "/api/repos/create", {"name": "strpriv", "private": "false"}, token=alice),
        live.request("POST", "/api/models/alice/fz/paths-info/main", b"paths=\xff\xfe", token=alice,
                     headers={"Content-Type": "application/x-www-form-urlencoded"}),
        commit(live, alice, "alice/fz", add("n.txt", b"n"), summary="nul \x00 inside"),
        live.request("POST", "/api/models/alice/fz/commit/main", b"", token=alice),
    ):
        assert_hub_error(status, headers, body, body)
    assert live.request("GET", "/api/models/alice/strpriv")[0] == 404  # "false" created nothing, private or not

    status, headers, body = live.request("POST", "/api/models/alice/fz/preupload/no-such-branch",
                                         {"files": [{"path": "a.txt", "sample": "", "size": 1}]}, token=alice)
    assert status == 404 and headers["x-error-code"] == "RevisionNotFound"

    # A CR/LF in the URL reaches the error message but never splits a header.
    for url, expected in (("/api/models/alice/fz%0d%0aSet-Cookie:%20x=1/tree/main", 404),
                          ("/api/models/alice/fz%0dx/tree/main", 404), ("/alice/fz/resolve/main/a%0db.txt", 422)):
        status, headers, body = live.request("GET", url)
        assert status == expected and "set-cookie" not in headers and "\r" not in headers["x-error-message"], url
        assert_hub_error(status, headers, body, url)


def test_empty_commits_are_refused(live, alice):
    assert commit(live, alice, "alice/fz", add("same.txt", b"same"))[0] == 200
    before = json.loads(live.request("GET", "/api/models/alice/fz/revision/main")[2])["sha"]
    status, headers, body = commit(live, alice, "alice/fz", add("same.txt", b"same"))
    assert_hub_error(status, headers, body, "unchanged")
    assert b"changes no file" in body
    assert_hub_error(*commit(live, alice, "alice/fz"), "no operations")
    assert json.loads(live.request("GET", "/api/models/alice/fz/revision/main")[2])["sha"] == before


def test_a_backwards_range_is_ignored(live, alice):
    assert commit(live, alice, "alice/fz", add("r.txt", b"0123456789"))[0] == 200
    status, headers, body = live.request("GET", "/alice/fz/resolve/main/r.txt", headers={"Range": "bytes=5-2"})
    assert (status, body) == (200, b"0123456789") and "content-range" not in headers
    assert live.request("GET", "/alice/fz/resolve/main/r.txt", headers={"Range": "bytes=2-4"})[2] == b"234"
    assert live.request("GET", "/alice/fz/resolve/main/r.txt", headers={"Range": "bytes=20-"})[0] == 416


# --- denial of service -------------------------------------------------------------------------------------
def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def send_oversized(port: int, head: bytes, body_bytes: int) -> bytes:
    """Send `head`, then up to `body_bytes` of body while the server reads; the response's first bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        chunk, sent = b"x" * (1 << 20), 0
        sock.settimeout(0.5)
        try:
            while sent < body_bytes:
                sock.sendall(chunk)
                sent += len(chunk)
                try:  # an answer already? then stop sending
                    got = sock.recv(65536, socket.MSG_PEEK)
                    if got:
                        break
                except (TimeoutError, BlockingIOError):
                    pass
        except OSError:  # the server closed the connection: it refused the rest
            pass
        sock.settimeout(20)
        try:
            return sock.recv(65536)
        except OSError:
            return b""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RSS is read from /proc")
def test_oversized_requests_are_refused_before_they_are_read(live, alice):
    port, mib = live.port, 1 << 20
    before = rss()
    big = 400 * mib
    for path, auth in (("/api/repos/create", ""), ("/login", ""), ("/api/models/alice/dos/commit/main", ""),
                       ("/api/models/alice/dos/commit/main", f"Authorization: Bearer {alice}\r\n"),
                       ("/api/repos/create", f"Authorization: Bearer {alice}\r\n")):
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n"
                f"Content-Length: {big}\r\n\r\n").encode()
        t0 = time.monotonic()
        answer = send_oversized(port, head, 64 * mib)
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
        assert status in ((401, 413) if not auth else (413,)), (path, auth, answer[:200])
        assert time.monotonic() - t0 < 10
    # No Content-Length: counted while it streams, refused once past the endpoint's limit.
    head = (f"POST /api/models/alice/dos/commit/main HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        try:
            for _ in range(8):
                sock.sendall(b"%x\r\n%s\r\n" % (mib, b"x" * mib))
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")
    # Headers: too many, or too long, 431, also for a header block that never ends (cut off at 1 MiB).
    many = "".join(f"X-H{i}: v\r\n" for i in range(10_000))
    status, _, _ = live.request("GET", "/api/models", headers={f"X-H{i}": "v" for i in range(200)})
    assert status == 431
    assert send_oversized(port, f"GET /api/models HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode(), 0) \
        .startswith(b"HTTP/1.1 431")
    assert live.request("GET", "/api/models", headers={"X-Big": "a" * (100 << 10)})[0] == 431
    answer = send_oversized(port, b"GET /api/models HTTP/1.1\r\nHost: x\r\nX-Huge: ", 100 * mib)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    grown = rss() - before
    print(f"server RSS growth over the oversized requests: {grown / mib:.1f} MiB")
    assert grown < 64 * mib, f"RSS grew {grown / mib:.0f} MiB"
    assert live.request("GET", "/api/models")[0] == 200


def test_yaml_aliases_deep_nesting_and_huge_markdown_are_bounded(live, alice):
    laughs = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=False))
    deep = "k: " + "[" * 5000 + "]" * 5000 + "\n"
    for i, front in enumerate((laughs, deep)):
        assert commit(live, alice, "alice/dos", add("README.md", f"---\n{front}---\n# card {i}\n".encode()))[0] == 200
        t0 = time.monotonic()
        status, _, page = live.request("GET", "/alice/dos", headers={"Accept": "text/html"})
        assert status == 200 and b"front matter does not parse" in page and len(page) < 100_000
        assert time.monotonic() - t0 < 5
    status, _, body = live.request("POST", "/api/validate-yaml", {"content": f"---\n{laughs}---\n"})
    assert status == 400 and b"aliases" in body
    assert limits.load_yaml("a: [1, {b: c}]") == {"a": [1, {"b": "c"}]}
    with pytest.raises(yaml.YAMLError, match="over the 100000"):
        limits.load_yaml("a: " + "x" * limits.YAML_LIMIT)

    # 400 kB of `[`: over the Markdown budget, shown as text; once rendered, a card is cached.
    assert commit(live, alice, "alice/dos", add("README.md", b"[" * 400_000))[0] == 200
    t0 = time.monotonic()
    status, _, page = live.request("GET", "/alice/dos", headers={"Accept": "text/html"})
    assert status == 200 and b"<pre>[[[" in page and time.monotonic() - t0 < 5


def test_a_big_commit_does_not_starve_a_small_one_and_trees_are_paged(live, alice):
    n = 3000
    big = [add(f"many/f{i:05d}.txt", str(i).encode() * 100) for i in range(n)]  # 2 MB of NDJSON
    done: dict[str, float] = {}

    def big_commit():
        status = commit(live, alice, "alice/dos", *big, summary="big")[0]
        done["big"] = time.monotonic()
        assert status == 200

    t = threading.Thread(target=big_commit)
    t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    assert commit(live, alice, "alice/dos", add("small.txt", b"small"), summary="small")[0] == 200
    done["small"] = time.monotonic()
    t.join(60)
    print(f"small commit: {done['small'] - t0:.2f} s; big ({n} files) done {done['big'] - t0:.2f} s after it began")
    assert done["small"] < done["big"]
    log = json.loads(live.request("GET", "/api/models/alice/dos/commits/main")[2])
    assert {c["title"] for c in log[:2]} == {"big", "small"}

    status, _, page = live.request("GET", "/alice/dos/tree/main/many", headers={"Accept": "text/html"})
    assert status == 200 and page.count(b'class="file" href') == 500 and b'href="?p=1"' in page
    last = live.request("GET", "/alice/dos/tree/main/many?p=5", headers={"Accept": "text/html"})[2]
    assert last.count(b'class="file" href') == n - 5 * 500 and b"f02999.txt" in last and b'href="?p=6"' not in last


# --- hardening ---------------------------------------------------------------------------------------------
def test_raw_files_cannot_act_as_pages(live, alice):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    assert commit(live, alice, "alice/fz", add("x.svg", svg), add("p.html", b"<script>alert(1)</script>"),
                  add("t.txt", b"<html><script>alert(1)</script>"))[0] == 200
    for name in ("x.svg", "p.html", "t.txt"):
        status, headers, _ = live.request("GET", f"/alice/fz/resolve/main/{name}")
        assert status == 200 and headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in headers["content-security-policy"] and "default-src 'none'" in \
            headers["content-security-policy"]
        assert headers["content-type"] == "application/octet-stream"
        assert headers.get("content-disposition", "").startswith("attachment") == (name != "t.txt"), name


def test_logout_only_from_the_hubs_own_pages(live, alice):
    status, _, _ = live.request("POST", "/logout", b"", headers={"Origin": "http://evil.example"})
    assert status == 403
    status, headers, _ = live.request("POST", "/logout", b"", headers={"Origin": f"http://127.0.0.1:{live.port}"})
    assert status == 303


def test_access_log_keeps_no_query_strings_or_signatures(live, alice):
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger, handler = logging.getLogger("uvicorn.access"), Keep()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        oid = hashlib.sha256(b"x").hexdigest()
        link = live.hub.sign("download", 1, oid, 1)
        live.request("GET", f"{link}?token=sekrit")
        live.request("GET", "/api/models?search=sekrit")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = "\n".join(lines)
    assert "/lfs/download/" in text and "/api/models" in text, text
    assert "sekrit" not in text and link.rsplit("/", 1)[1] not in text, text
