"""Git smart HTTP and the Git LFS batch API, on the same repos and object store as the HTTP API.

Clone, fetch and push go through `git http-backend` (git's own CGI program), run on the repo's bare
directory once the caller is checked: reading needs a token only for a private repo, pushing needs a
write token. Git sends the token as the Basic-auth password (any user name). An unauthenticated
request that would be refused gets a 401 challenge so that git and git-lfs send their credentials.

The LFS batch API (`POST .../info/lfs/objects/batch`) answers with signed upload, verify and download
links (see server.Hub.sign); a download is offered only for objects this repo owns.

Pushes: git checks every pushed object (`receive.fsckObjects`) and the hub's pre-receive hook
(pushcheck.py) refuses names the HTTP API could not handle (backslashes, control characters) and the
deletion of `main`; a refused push changes nothing. Force-pushes are allowed on every branch, as on
the Hugging Face Hub. The commits only the old history reached stay in the repo (the hub never runs
`git gc`), readable by their id through the API and `resolve`, and the LFS objects they point at stay
owned by the repo, until the repo is deleted.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from zupu.hub import gitrepo
from zupu.hub.db import HubError, Repo, RepoObject
from zupu.hub.inputs import field
from zupu.hub.server import LFS_JSON, Caller, Hub, base_url

SERVICES = ("git-upload-pack", "git-receive-pack")


def _find(hub: Hub, caller: Caller, kind: str, repo_id: str, write: bool) -> Repo:
    try:
        return hub.find_repo(caller, kind, repo_id, write)
    except HubError as e:
        if e.status in (403, 404) and not caller.sent_credentials:
            raise HubError(401, f"{repo_id}: authentication required (a token as the Basic-auth password)") from None
        raise


async def handle(hub: Hub, request: Request, kind: str, repo_id: str, rest: list[str]) -> Response:
    caller = await run_in_threadpool(hub.caller, request.headers.get("authorization"))
    if rest[:4] == ["info", "lfs", "objects", "batch"] and request.method == "POST":
        return await lfs_batch(hub, request, caller, kind, repo_id)
    if rest[:2] == ["info", "lfs"]:
        raise HubError(404, "this hub implements the LFS batch API only (no locking API)")
    service = request.query_params.get("service") if rest == ["info", "refs"] else (rest[0] if rest else "")
    if rest != ["info", "refs"] and not (len(rest) == 1 and rest[0] in SERVICES and request.method == "POST"):
        raise HubError(404, "the hub serves git only over the smart HTTP protocol")
    if service not in SERVICES:
        raise HubError(403, "dumb HTTP git is not served; use a git client that speaks smart HTTP")
    write = service == "git-receive-pack"
    repo = _find(hub, caller, kind, repo_id, write)
    body = await request.body() if request.method == "POST" else b""
    if len(body) > hub.max_commit_bytes:
        raise HubError(413, f"push over this hub's {hub.max_commit_bytes} bytes; push LFS files through git lfs")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(hub.data / "repos"),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": f"/{repo.id}.git/{'/'.join(rest)}",
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.url.query,
        "CONTENT_TYPE": request.headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_USER": caller.user.name if caller.user else "",
        "REMOTE_ADDR": request.client.host if request.client else "",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(hub.data),
        # Settings for every repo, old ones too: git's own object checks and the hub's pre-receive hook.
        "GIT_CONFIG_COUNT": "3",
        "GIT_CONFIG_KEY_0": "receive.fsckObjects", "GIT_CONFIG_VALUE_0": "true",
        "GIT_CONFIG_KEY_1": "core.hooksPath", "GIT_CONFIG_VALUE_1": str(_hooks(hub)),
        "GIT_CONFIG_KEY_2": "receive.denyNonFastForwards", "GIT_CONFIG_VALUE_2": "false",
    }
    for header, var in (("content-encoding", "HTTP_CONTENT_ENCODING"), ("git-protocol", "GIT_PROTOCOL")):
        if request.headers.get(header):
            env[var] = request.headers[header]
    if write and caller.user:
        env.update(GIT_COMMITTER_NAME=caller.user.name, GIT_COMMITTER_EMAIL=f"{caller.user.name}@zupu.hub")
    # No body (GET info/refs): no stdin pipe, which http-backend, exiting at once, could close under uvloop's
    # feet before communicate() wrote its nothing (RuntimeError: the handler is closed).
    stdin = asyncio.subprocess.PIPE if body else asyncio.subprocess.DEVNULL
    proc = await asyncio.create_subprocess_exec("git", "http-backend", env=env, stdin=stdin,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(body or None), timeout=600)
    head, sep, payload = out.partition(b"\r\n\r\n")
    if not sep:
        head, sep, payload = out.partition(b"\n\n")
    status, headers = 200, {}
    for line in head.decode("latin-1").splitlines():
        key, _, value = line.partition(":")
        if key.lower() == "status":
            status = int(value.split()[0])
        elif key:
            headers[key.strip()] = value.strip()
    if proc.returncode != 0 and status == 200 and not payload:
        raise HubError(500, f"git http-backend failed: {err.decode(errors='replace')[-500:]}")
    if write:
        await asyncio.to_thread(_after_push, hub, repo)
    return Response(payload, status_code=status, headers=headers)


def _hooks(hub: Hub) -> Path:
    """The hub's git hooks folder, holding the pre-receive hook (pushcheck.py run by this Python)."""
    folder = hub.data / "hooks"
    hook = folder / "pre-receive"
    check = Path(__file__).with_name("pushcheck.py")
    script = f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(check))}\n"
    if not hook.exists() or hook.read_text() != script:
        from zupu.atomic import write_bytes

        folder.mkdir(exist_ok=True)
        write_bytes(hook, script.encode())
        hook.chmod(0o755)
    return folder


def _after_push(hub: Hub, repo: Repo) -> None:
    from zupu.hub import db

    with hub.sessions() as s, s.begin():
        s.get(Repo, repo.id).updated = db.now()


async def lfs_batch(hub: Hub, request: Request, caller: Caller, kind: str, repo_id: str) -> Response:
    try:
        body = json.loads(await request.body())
        operation, objects = body["operation"], body["objects"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise HubError(422, "an LFS batch request is a JSON object with operation and objects") from None
    if operation not in ("upload", "download") or not isinstance(objects, list):
        raise HubError(422, f"LFS batch operation {str(operation)[:40]!r} is not upload or download, or objects "
                            "is not a list")
    transfers = field(body, "transfers", list, [], "an LFS batch request")
    repo = await asyncio.to_thread(_find, hub, caller, kind, repo_id, operation == "upload")
    base = base_url(request)
    auth = {"Authorization": request.headers["authorization"]} if "authorization" in request.headers else {}
    multipart = "multipart" in transfers
    out = []
    for obj in objects:
        obj = obj if isinstance(obj, dict) else {}
        oid, size = obj.get("oid"), obj.get("size")
        if not isinstance(oid, str) or not gitrepo.SHA256.match(oid) or not isinstance(size, int) \
                or isinstance(size, bool) or size < 0:
            out.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                        "error": {"code": 422, "message": "oid must be a sha256 hex digest and size an integer"}})
            continue
        with hub.sessions() as s:
            owned = s.get(RepoObject, (repo.id, oid))
        present = owned is not None and owned.size == size and await asyncio.to_thread(hub.storage.exists, oid, size)
        if operation == "upload":
            if size > hub.max_object_size:
                out.append({"oid": oid, "size": size, "error": {
                    "code": 413, "message": f"{size} bytes is over this hub's limit of {hub.max_object_size}"}})
            elif present:
                out.append({"oid": oid, "size": size})
            elif multipart and size > hub.multipart_chunk:
                # HF multipart: PUT each part to its link (header "1", "2", ...), then POST the ETags to href.
                parts = {str(n): base + hub.sign(f"part/{n}", repo.id, oid, size)
                         for n in range(1, -(-size // hub.multipart_chunk) + 1)}
                out.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": base + hub.sign("complete", repo.id, oid, size),
                               "header": {"chunk_size": str(hub.multipart_chunk), **parts}, "expires_in": 3600},
                    "verify": {"href": base + hub.sign("verify", repo.id, oid, size), "header": auth,
                               "expires_in": 3600}}})
            else:
                # Even if another repo holds these bytes, this repo gets them only by uploading them.
                out.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": base + hub.sign("upload", repo.id, oid, size), "header": auth,
                               "expires_in": 3600},
                    "verify": {"href": base + hub.sign("verify", repo.id, oid, size), "header": auth,
                               "expires_in": 3600}}})
        elif present:
            out.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "download": {"href": base + hub.sign("download", repo.id, oid, size), "header": auth,
                             "expires_in": 3600}}})
        else:
            out.append({"oid": oid, "size": size,
                        "error": {"code": 404, "message": f"object {oid} is not in {repo_id}"}})
    chunked = any("chunk_size" in (o.get("actions", {}).get("upload", {}).get("header") or {}) for o in out)
    return JSONResponse({"transfer": "multipart" if chunked else "basic", "objects": out, "hash_algo": "sha256"},
                        media_type=LFS_JSON)
