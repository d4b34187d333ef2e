"""The hub's HTTP server: the Hugging Face Hub API that `huggingface_hub` speaks, Git LFS, git smart HTTP.

URL layout (as on huggingface.co; datasets and spaces prefix `/datasets/` and `/spaces/`):

    /api/whoami-v2, /api/repos/{create,delete,move}, /api/{models,datasets,spaces}[?author=&search=]
    /api/{type}s/{ns}/{name}[/revision/{rev}]            repo info
    /api/{type}s/{ns}/{name}/{tree,paths-info,commits,preupload,commit}/{rev}[/{path}]
    /api/{type}s/{ns}/{name}/{refs,settings,branch/{b},tag/{rev-or-tag}}
    /{ns}/{name}/resolve/{rev}/{path}                    file download (HEAD/GET, Range)
    /{ns}/{name}[.git]/info/lfs/objects/batch            Git LFS batch API
    /{ns}/{name}[.git]/{info/refs,git-upload-pack,git-receive-pack}   git smart HTTP
    /, /{ns}/{name}[/tree|blob|commits/...]              web pages (web.py), for GETs no client route took

Revisions and tree paths arrive percent-encoded (`refs%2Fpr%2F1`), so the repo routes are matched on
the raw request path, segment by segment, rather than on the decoded one.

LFS transfer URLs (upload, verify, download) are signed with the hub's secret and name the repo,
oid and size, because `huggingface_hub` PUTs uploads without its token, as to a presigned S3 URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from zupu.hub import db, gitattributes, gitrepo, limits
from zupu.hub.db import HubError, Membership, Repo, RepoObject, Token, User
from zupu.hub.inputs import field, objects, query_int, text
from zupu.hub.spaces import SDKS, card_sdk, initial_card
from zupu.hub.storage import Storage, UploadRejected, open_storage

PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_TYPES = {"datasets": "dataset", "spaces": "space"}
LFS_JSON = "application/vnd.git-lfs+json"
GIB = 1 << 30
RAW_CSP = "default-src 'none'; sandbox"
# Files a browser could show as a page (and run script in): served as downloads only.
ACTIVE_SUFFIXES = (".html", ".htm", ".xhtml", ".svg", ".svgz", ".xml", ".xsl", ".mht", ".shtml")
SWEEP_AFTER = 24 * 3600  # seconds: leftovers of uploads older than this are a killed hub's, not in flight


@dataclass
class Caller:
    user: User | None
    scope: str | None  # "read", "write" or None (anonymous)
    sent_credentials: bool


class Hub:
    """State shared by all requests: database, storage, git repos, locks, secret."""

    def __init__(self, data: str | os.PathLike, db_url: str | None = None, max_object_size: int = 50 * GIB,
                 max_commit_bytes: int = 1 * GIB, page_size: int = 1000, multipart_chunk: int = 64 << 20,
                 storage: str | None = None, sweep_after: float = SWEEP_AFTER, run_spaces: bool = False,
                 spaces_host: str = "localhost", spaces_bind: str = "127.0.0.1", spaces_idle: float = 900.0,
                 spaces_dir: str | None = None):
        self.data = Path(data).resolve()
        self.data.mkdir(parents=True, exist_ok=True)
        self.sessions = db.connect(db_url or db.default_url(self.data))
        self.storage: Storage = open_storage(storage, self.data / "lfs")  # None: --data/lfs; s3://bucket/prefix
        self.storage.sweep(sweep_after)  # what killed uploads left, once no upload in flight can own it
        self.max_object_size, self.max_commit_bytes, self.page_size = max_object_size, max_commit_bytes, page_size
        self.multipart_chunk = multipart_chunk  # objects larger than this go up in parts when the client can
        self.secret = self._secret()
        self._locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()
        from zupu.hub.spaces import Spaces

        # Each Space on a port of its own (spaces.py); gradio apps run only with run_spaces.
        self.spaces = Spaces(self, bind=spaces_bind, public_host=spaces_host, run=run_spaces, idle=spaces_idle,
                             root=spaces_dir)
        with self.sessions() as s:
            existing = s.scalars(select(Repo).where(Repo.type == "space")).all()
        for repo in existing:  # a Space's address works from the start, not only once its page was seen
            self.spaces.space(repo)

    def _secret(self) -> bytes:
        path = self.data / "secret"
        if not path.exists():
            from zupu.atomic import write_bytes

            write_bytes(path, secrets.token_bytes(32))
            path.chmod(0o600)
        return path.read_bytes()

    def lock(self, repo: Repo) -> threading.Lock:
        with self._locks_guard:
            return self._locks[repo.id]

    def git(self, repo: Repo) -> gitrepo.Repo:
        return gitrepo.Repo(self.data / "repos" / f"{repo.id}.git")

    # --- signed LFS transfer URLs -------------------------------------------------------------------
    def sign(self, op: str, repo_id: int, oid: str, size: int, ttl: int = 3600) -> str:
        exp = int(time.time()) + ttl
        msg = f"{op}/{repo_id}/{oid}/{size}/{exp}"  # op "part/N" signs the part number too
        sig = hmac.new(self.secret, msg.encode(), hashlib.sha256).hexdigest()[:40]
        return f"/lfs/{msg}/{sig}"

    def check_signature(self, op: str, repo_id: str, oid: str, size: str, exp: str, sig: str) -> tuple[int, str, int]:
        msg = f"{op}/{repo_id}/{oid}/{size}/{exp}"
        good = hmac.new(self.secret, msg.encode(), hashlib.sha256).hexdigest()[:40]
        if not hmac.compare_digest(good, sig) or not exp.isdigit() or int(exp) < time.time():
            raise HubError(403, "this LFS transfer link is invalid or expired; ask the batch API for a new one")
        with self.sessions() as s:  # a link is for its repo only: ids of deleted repos are never reused
            repo = s.get(Repo, int(repo_id))
        if repo is None or repo.type == db.DELETED:
            raise HubError(404, "the repository this LFS link was made for has been deleted", "RepoNotFound")
        return int(repo_id), oid, int(size)

    # --- callers and permissions ----------------------------------------------------------------------
    def caller(self, authorization: str | None) -> Caller:
        if not authorization:
            return Caller(None, None, False)
        kind, _, value = authorization.partition(" ")
        token = value.strip()
        if kind.lower() == "basic":
            try:
                token = base64.b64decode(token).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                raise HubError(401, "malformed Basic authorization header") from None
        elif kind.lower() != "bearer":
            raise HubError(401, f"authorization scheme {kind!r} is not Bearer or Basic")
        with self.sessions() as s:
            tok = s.scalar(select(Token).where(Token.digest == db.token_digest(token), Token.revoked.is_(False)))
            if tok is None:
                raise HubError(401, "invalid or revoked token; create one with `zupu hub token create`")
            return Caller(s.get(User, tok.user_id), tok.scope, True)

    def member_of(self, user: User, namespace: str) -> bool:
        if user.name == namespace:
            return True
        with self.sessions() as s:
            org = s.scalar(select(User).where(User.name == namespace, User.is_org.is_(True)))
            return org is not None and s.get(Membership, (org.id, user.id)) is not None

    def find_repo(self, caller: Caller, kind: str, repo_id: str, write: bool = False) -> Repo:
        """The repo, if the caller may see it (else 404, like the HF Hub) and write it when asked (else 403)."""
        ns, _, name = repo_id.partition("/")
        with self.sessions() as s:
            repo = s.scalar(select(Repo).where(Repo.type == kind, Repo.namespace == ns, Repo.name == name))
        owner = caller.user is not None and self.member_of(caller.user, ns)
        if repo is None or (repo.private and not owner):
            raise HubError(404, f"{kind} repository {repo_id} not found (or private and not yours)", "RepoNotFound")
        if write and not (owner and caller.scope == "write"):
            raise HubError(403, f"you cannot write to {repo_id}: "
                                + ("your token is read-only" if owner else "it belongs to someone else"))
        return repo

    def can_create_in(self, caller: Caller, namespace: str) -> User:
        if caller.user is None:
            raise HubError(401, "creating a repo needs a token (Authorization: Bearer ...)")
        if caller.scope != "write":
            raise HubError(403, "your token is read-only; creating a repo needs a write token")
        if not self.member_of(caller.user, namespace):
            raise HubError(403, f"you are not {namespace} nor a member of the organisation {namespace}")
        return caller.user


def error_response(e: HubError) -> JSONResponse:
    # ASCII without control characters: a CR or LF from a URL (`%0d`) must not end up splitting the header.
    headers = {"X-Error-Message": re.sub(r"[\x00-\x1f\x7f]", "?", str(e).encode("ascii", "replace").decode())}
    if e.code:
        headers["X-Error-Code"] = e.code
    if e.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="zupu hub"'
    return JSONResponse({"error": str(e)}, status_code=e.status, headers=headers)


def repo_type(body: dict[str, Any]) -> str:
    kind = field(body, "type", str) or "model"
    if kind not in db.REPO_TYPES:
        raise HubError(400, f"repo type {kind!r} is not one of {', '.join(db.REPO_TYPES)}")
    return kind


def visibility(body: dict[str, Any], current: bool | None) -> bool | None:
    """Whether a create or settings body makes the repo private (`visibility` wins over `private`)."""
    private = field(body, "private", bool, current)
    shown = field(body, "visibility", str)
    if shown is not None:
        if shown not in ("public", "private"):
            raise HubError(400, f"visibility {shown[:40]!r} is not public or private")
        private = shown == "private"
    return private


def segments(request: Request) -> list[str]:
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1").split("?", 1)[0]
    return [unquote(p) for p in path.strip("/").split("/")]


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def create_app(hub: Hub) -> FastAPI:
    app = FastAPI(title="zupu hub", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.hub = hub
    app.add_middleware(limits.Bounds, limit=lambda path: limits.body_limit(path, hub.max_commit_bytes,
                                                                            hub.max_object_size),
                       refuse=lambda status, message: error_response(HubError(status, message)))
    limits.quiet_access_log()

    @app.exception_handler(HubError)
    async def _hub_error(_request: Request, e: HubError):
        return error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def _no_route(request: Request, e: StarletteHTTPException):
        # What no route matched (a path with a newline: `{rest:path}` stops at it) in the Hub's error shape.
        return error_response(HubError(e.status_code, f"no such endpoint {request.method} {request.url.path}"))

    @app.exception_handler(gitrepo.BadPath)
    async def _bad_path(_request: Request, e: gitrepo.BadPath):
        return error_response(HubError(422, str(e)))

    @app.exception_handler(gitrepo.PathConflict)
    async def _conflict(_request: Request, e: gitrepo.PathConflict):
        return error_response(HubError(409, str(e)))

    async def caller_of(request: Request) -> Caller:
        # A database lookup: off the event loop, which meanwhile streams other requests' downloads.
        return await run_in_threadpool(hub.caller, request.headers.get("authorization"))

    async def signed_in(request: Request) -> Caller:
        """The caller, who must have sent a token: 401 before the body is read, not after."""
        c = await caller_of(request)
        if c.user is None:
            raise HubError(401, "this needs a token (Authorization: Bearer ...)")
        return c

    async def json_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HubError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HubError(400, "the request body must be a JSON object")
        return body

    # --- accounts ------------------------------------------------------------------------------------
    @app.get("/api/whoami-v2")
    async def whoami(request: Request):
        c = await caller_of(request)
        if c.user is None:
            raise HubError(401, "send a token: Authorization: Bearer <token>")
        with hub.sessions() as s:
            orgs = s.scalars(select(User).join(Membership, Membership.org_id == User.id)
                             .where(Membership.user_id == c.user.id)).all()
        return {"type": "user", "id": str(c.user.id), "name": c.user.name, "fullname": c.user.name,
                "orgs": [{"type": "org", "name": o.name, "id": str(o.id)} for o in orgs],
                "auth": {"type": "access_token", "accessToken": {"displayName": c.user.name, "role": c.scope}}}

    # --- repo lifecycle --------------------------------------------------------------------------------
    @app.post("/api/repos/create")
    async def create_repo(request: Request):
        c = await signed_in(request)
        body = await json_body(request)
        kind = repo_type(body)
        ns = field(body, "organization", str) or c.user.name
        name = db.check_name(field(body, "name", str, ""), "repo")
        db.check_name(ns, "namespace")
        user = hub.can_create_in(c, ns)
        private = visibility(body, False)
        sdk = field(body, "sdk", str, "static" if kind == "space" else None)
        if kind == "space" and sdk not in SDKS:
            raise HubError(400, f"space_sdk {sdk!r} is not one this hub serves: {', '.join(SDKS)}")
        url = f"{base_url(request)}/{PREFIX[kind]}{ns}/{name}"
        return await run_in_threadpool(_create_repo, hub, kind, ns, name, private, user, url, sdk)

    @app.delete("/api/repos/delete")
    async def delete_repo(request: Request):
        c = await signed_in(request)
        body = await json_body(request)
        kind = repo_type(body)
        ns = field(body, "organization", str) or c.user.name
        repo = hub.find_repo(c, kind, f"{ns}/{field(body, 'name', str, '')}", write=True)
        with hub.sessions() as s, s.begin():
            s.execute(delete(RepoObject).where(RepoObject.repo_id == repo.id))
            # The row stays as a tombstone, so its id (in git paths and signed links) is never given out again.
            row = s.get(Repo, repo.id)
            row.type, row.name, row.private = db.DELETED, f"{row.id}-{row.name}"[:96], True
        git = hub.git(repo)
        trash = git.path.with_name(f"{git.path.name}.deleted-{secrets.token_hex(4)}")
        os.replace(git.path, trash)
        await run_in_threadpool(__import__("shutil").rmtree, trash, True)
        if kind == "space":
            await run_in_threadpool(hub.spaces.forget, repo.id)
        return {}

    @app.post("/api/repos/move")
    async def move_repo(request: Request):
        c = await signed_in(request)
        body = await json_body(request)
        kind = repo_type(body)
        repo = hub.find_repo(c, kind, field(body, "fromRepo", str, ""), write=True)
        ns, _, name = field(body, "toRepo", str, "").partition("/")
        db.check_name(name, "repo")
        hub.can_create_in(c, ns)
        with hub.sessions() as s:
            try:
                with s.begin():
                    row = s.get(Repo, repo.id)
                    row.namespace, row.name, row.updated = ns, name, db.now()
            except IntegrityError:
                raise HubError(409, f"{kind} repository {ns}/{name} already exists") from None
        return {}

    @app.get("/api/{kinds}")
    async def list_repos(kinds: str, request: Request):
        if kinds not in KINDS:
            raise HubError(404, f"no such endpoint /api/{kinds}")
        c = await caller_of(request)
        q = request.query_params
        with hub.sessions() as s:
            stmt = select(Repo).where(Repo.type == KINDS[kinds]).order_by(Repo.namespace, Repo.name)
            if q.get("author"):
                stmt = stmt.where(Repo.namespace == q["author"])
            rows = s.scalars(stmt).all()
        search = (q.get("search") or "").lower()
        out = [_repo_summary(r) for r in rows
               if search in r.repo_id.lower() and (not r.private or (c.user and hub.member_of(c.user, r.namespace)))]
        limit = query_int(q, "limit")
        return out[:limit] if limit > 0 else out

    @app.post("/api/validate-yaml")
    async def validate_yaml(request: Request):
        body = await json_body(request)
        content = field(body, "content", str, "")
        import yaml

        front = content
        if content.startswith("---"):
            parts = content.split("---", 2)
            front = parts[1] if len(parts) >= 3 else ""
        try:
            meta = await run_in_threadpool(limits.load_yaml, front) or {}
            problem = None if isinstance(meta, dict) else "YAML metadata must be a mapping"
        except yaml.YAMLError as e:
            problem = f"invalid YAML metadata: {e}"
        if problem:  # huggingface_hub reads `errors` and raises ValueError("Invalid metadata in README.md ...")
            return JSONResponse({"error": problem, "errors": [{"message": problem}], "warnings": []}, 400,
                                headers={"X-Error-Message": problem.splitlines()[0][:200]})
        return {"errors": [], "warnings": []}

    # --- LFS transfers (signed links) -------------------------------------------------------------------
    @app.put("/lfs/upload/{repo_id}/{oid}/{size}/{exp}/{sig}")
    async def lfs_upload(repo_id: str, oid: str, size: str, exp: str, sig: str, request: Request):
        rid, oid, n = await run_in_threadpool(hub.check_signature, "upload", repo_id, oid, size, exp, sig)
        if request.headers.get("content-length", "").isdigit() and int(request.headers["content-length"]) > n:
            raise HubError(413 if int(request.headers["content-length"]) > hub.max_object_size else 400,
                           f"Content-Length {request.headers['content-length']} is not the announced size {n}")
        try:
            await hub.storage.put(oid, n, request.stream(), hub.max_object_size)
        except UploadRejected as e:
            raise HubError(e.status, str(e)) from None
        except ClientDisconnect:
            return Response(status_code=400)
        _link(hub, rid, oid, n)
        return Response(status_code=200)

    @app.put("/lfs/part/{n}/{repo_id}/{oid}/{size}/{exp}/{sig}")
    async def lfs_part(n: str, repo_id: str, oid: str, size: str, exp: str, sig: str, request: Request):
        rid, oid, total = await run_in_threadpool(hub.check_signature, f"part/{n}", repo_id, oid, size, exp, sig)
        k, chunk = int(n), hub.multipart_chunk
        if not 1 <= k <= -(-total // chunk):
            raise HubError(400, f"{oid} has no part {k}")
        length = min(chunk, total - (k - 1) * chunk)
        try:
            etag = await hub.storage.put_part(oid, str(rid), k, length, request.stream())
        except UploadRejected as e:
            raise HubError(e.status, str(e)) from None
        except ClientDisconnect:
            return Response(status_code=400)
        return Response(status_code=200, headers={"ETag": f'"{etag}"'})

    @app.post("/lfs/complete/{repo_id}/{oid}/{size}/{exp}/{sig}")
    async def lfs_complete(repo_id: str, oid: str, size: str, exp: str, sig: str, request: Request):
        rid, oid, n = await run_in_threadpool(hub.check_signature, "complete", repo_id, oid, size, exp, sig)
        body = await json_body(request)
        parts = sorted(objects(body, "parts"), key=lambda p: field(p, "partNumber", int, 0, "a part"))
        expected = -(-n // hub.multipart_chunk)
        if field(body, "oid", str) != oid or [p.get("partNumber") for p in parts] != list(range(1, expected + 1)):
            raise HubError(400, f"completion must list parts 1..{expected} of {oid}")
        try:
            await hub.storage.assemble(oid, n, str(rid), [field(p, "etag", str, "", "a part") for p in parts],
                                       hub.max_object_size)
        except UploadRejected as e:
            raise HubError(e.status, str(e)) from None
        _link(hub, rid, oid, n)
        return {}

    @app.post("/lfs/verify/{repo_id}/{oid}/{size}/{exp}/{sig}")
    async def lfs_verify(repo_id: str, oid: str, size: str, exp: str, sig: str):
        rid, oid, n = await run_in_threadpool(hub.check_signature, "verify", repo_id, oid, size, exp, sig)
        if not _linked(hub, rid, oid) or not await run_in_threadpool(hub.storage.exists, oid, n):
            raise HubError(404, f"object {oid} of {n} bytes was not uploaded to this repo")
        return {}

    @app.get("/lfs/download/{repo_id}/{oid}/{size}/{exp}/{sig}")
    async def lfs_download(repo_id: str, oid: str, size: str, exp: str, sig: str, request: Request):
        rid, oid, n = await run_in_threadpool(hub.check_signature, "download", repo_id, oid, size, exp, sig)
        if not _linked(hub, rid, oid) or not await run_in_threadpool(hub.storage.exists, oid, n):
            raise HubError(404, f"object {oid} is not in this repo")
        return _file_response(request, hub.storage, oid, n, {"ETag": f'"{oid}"', "X-Content-Type-Options": "nosniff",
                                                             "Content-Security-Policy": RAW_CSP})

    # --- everything under a repo ---------------------------------------------------------------------------
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE"]

    @app.api_route("/api/{kinds}/{rest:path}", methods=methods)
    async def repo_api(kinds: str, rest: str, request: Request):
        if kinds not in KINDS:
            raise HubError(404, f"no such endpoint /api/{kinds}/...")
        parts = segments(request)[2:]
        if len(parts) < 2:
            raise HubError(404, "a repo id is namespace/name", "RepoNotFound")
        repo_id, op, args = f"{parts[0]}/{parts[1]}", (parts[2] if len(parts) > 2 else ""), parts[3:]
        handler = REPO_API.get((request.method if request.method != "HEAD" else "GET", op))
        if handler is None:
            raise HubError(404, f"no endpoint {request.method} /api/{kinds}/{{repo}}/{op}")
        c = await caller_of(request)
        if c.user is None and request.method not in ("GET", "HEAD") and handler is not repo_paths_info:
            raise HubError(401, f"{request.method} {op} needs a token (Authorization: Bearer ...)")
        body = await request.body() if request.method in ("POST", "PUT", "DELETE") else b""
        ctx = Ctx(hub, c, KINDS[kinds], repo_id, args, request, body)
        return await run_in_threadpool(handler, ctx)

    from zupu.hub import githttp, web

    web.register(app, hub)  # /, /models, /datasets, /spaces, /login, /logout: before the catch-all

    @app.api_route("/{rest:path}", methods=methods)
    async def repo_files(rest: str, request: Request):
        # Clients first (git, git lfs, resolve), then the web pages for what is left of GET and HEAD.
        parts = segments(request)
        kind = URL_TYPES.get(parts[0], "model")
        if kind != "model":
            parts = parts[1:]
        if len(parts) >= 3:
            ns, name = parts[0], parts[1]
            if name.endswith(".git") or parts[2] in ("info", "git-upload-pack", "git-receive-pack", "HEAD", "objects"):
                return await githttp.handle(hub, request, kind, f"{ns}/{name.removesuffix('.git')}", parts[2:])
            if parts[2] == "resolve" and len(parts) >= 5:
                return await run_in_threadpool(_resolve, hub, kind, f"{ns}/{name}", parts[3], "/".join(parts[4:]),
                                               request)
        if request.method in ("GET", "HEAD"):
            return await web.serve_page(hub, request, kind, parts)
        raise HubError(404, f"no such page /{rest}")

    return app


# --- helpers run in worker threads -------------------------------------------------------------------------
@dataclass
class Ctx:
    hub: Hub
    caller: Caller
    kind: str
    repo_id: str
    args: list[str]
    request: Request
    body: bytes

    def repo(self, write: bool = False) -> Repo:
        return self.hub.find_repo(self.caller, self.kind, self.repo_id, write)

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            body = json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HubError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HubError(400, "the request body must be a JSON object")
        return body

    def commit_of(self, repo: Repo, revision: str) -> str:
        oid = self.hub.git(repo).resolve(revision)
        if oid is None:
            raise HubError(404, f"revision {revision!r} not found in {self.repo_id}", "RevisionNotFound")
        return oid

    def url(self, repo: Repo) -> str:
        return f"{base_url(self.request)}/{PREFIX[repo.type]}{repo.repo_id}"


def _create_repo(hub: Hub, kind: str, ns: str, name: str, private: bool, user: User, url: str,
                 sdk: str | None = None):
    with hub.sessions() as s:
        try:
            with s.begin():
                repo = Repo(type=kind, namespace=ns, name=name, private=private)
                s.add(repo)
                s.flush()
                git = hub.git(repo)
                git.init()
                first = [gitrepo.Change(".gitattributes", gitrepo.DEFAULT_GITATTRIBUTES.encode())]
                if kind == "space":  # as on huggingface.co, the sdk lives in the card's front matter
                    first.append(gitrepo.Change("README.md", initial_card(name, sdk)))
                git.commit("main", first, "initial commit", (user.name, f"{user.name}@zupu.hub"))
        except IntegrityError:
            return JSONResponse({"error": f"You already created this {kind} repo", "url": url}, status_code=409)
    if kind == "space":
        hub.spaces.space(repo)
    return {"url": url, "name": f"{ns}/{name}", "id": f"{ns}/{name}"}


def _repo_summary(r: Repo) -> dict[str, Any]:
    return {"id": r.repo_id, "_id": str(r.id), "author": r.namespace, "private": r.private, "gated": False,
            "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "createdAt": gitrepo.iso(r.created), "lastModified": gitrepo.iso(r.updated)}


def _link(hub: Hub, repo_id: int, oid: str, size: int) -> None:
    try:
        with hub.sessions() as s, s.begin():
            if s.get(RepoObject, (repo_id, oid)) is None:
                s.add(RepoObject(repo_id=repo_id, oid=oid, size=size))
    except IntegrityError:  # a concurrent upload of the same object linked it first, or the repo is gone
        if not _linked(hub, repo_id, oid):
            raise HubError(404, f"repository {repo_id} was deleted during the upload", "RepoNotFound") from None


def _linked(hub: Hub, repo_id: int, oid: str) -> bool:
    with hub.sessions() as s:
        return s.get(RepoObject, (repo_id, oid)) is not None


def _entry_json(e: gitrepo.Entry, last: gitrepo.CommitInfo | None = None) -> dict[str, Any]:
    if e.kind == "directory":
        out: dict[str, Any] = {"type": "directory", "oid": e.oid, "size": 0, "path": e.path}
    else:
        out = {"type": "file", "oid": e.oid, "size": e.lfs[1] if e.lfs else e.size, "path": e.path}
        if e.lfs:
            out["lfs"] = {"oid": e.lfs[0], "size": e.lfs[1], "pointerSize": e.size}
    if last is not None:
        out["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
    return out


def repo_info(ctx: Ctx) -> dict[str, Any]:
    repo = ctx.repo()
    git = ctx.hub.git(repo)
    revision = ctx.args[1] if ctx.args[:1] == ["revision"] and len(ctx.args) > 1 else "main"
    sha = ctx.commit_of(repo, revision)
    files = [e for e in git.ls(sha, recursive=True) if e.kind == "file"]
    blobs = ctx.request.query_params.get("blobs", "").lower() in ("1", "true")
    siblings = []
    for e in files:
        sib: dict[str, Any] = {"rfilename": e.path}
        if blobs:
            sib.update(size=e.lfs[1] if e.lfs else e.size, blobId=e.oid)
            if e.lfs:
                sib["lfs"] = {"sha256": e.lfs[0], "size": e.lfs[1], "pointerSize": e.size}
        siblings.append(sib)
    last = git.log(sha, limit=1)
    info = _repo_summary(repo)
    info.update(sha=sha, siblings=siblings, lastModified=last[0].date if last else info["lastModified"])
    if repo.type == "space":
        host = ctx.hub.spaces.host(repo)
        sdk, _ = card_sdk(git, sha)
        info.update(sdk=sdk, host=host, subdomain=host.split("//", 1)[1],
                    runtime=ctx.hub.spaces.space(repo).runtime(repo, sha))
    return info


def repo_runtime(ctx: Ctx) -> dict[str, Any]:
    if ctx.kind != "space":
        raise HubError(404, "only Spaces have a runtime")
    repo = ctx.repo()
    return ctx.hub.spaces.space(repo).runtime(repo)


def repo_viewer(ctx: Ctx) -> dict[str, Any]:
    """The dataset viewer's data: `/api/datasets/{id}/viewer[/{rev}]` lists configs and splits; with
    `?config=&split=[&offset=&length=]` it gives that split's schema and rows. A card or file the viewer
    cannot read is a 422 naming it (per split in the listing), never a 500."""
    from zupu.hub import viewer

    if ctx.kind != "dataset":
        raise HubError(404, "only dataset repos have a viewer")
    repo = ctx.repo()
    sha = ctx.commit_of(repo, ctx.args[0] if ctx.args else "main")
    git, q = ctx.hub.git(repo), ctx.request.query_params
    try:
        splits = viewer.repo_splits(git, sha)
        if "split" not in q:
            return {"sha": sha, "splits": [{"config": s.config, "split": s.name, "files": [f.path for f in s.files],
                                            "error": s.error} for s in splits]}
        split = viewer.find(splits, q.get("config", "default"), q["split"])
        length = min(max(query_int(q, "length") or viewer.ROWS_PER_PAGE, 1), 100)
        r = viewer.rows(git, ctx.hub.storage, split, max(query_int(q, "offset"), 0), length)
    except viewer.ViewerError as e:
        raise HubError(422, str(e)) from None
    return {"sha": sha, "config": split.config, "split": split.name, "columns": [{"name": n, "type": t}
                                                                                  for n, t in r.columns],
            "rows": [[c.get("text", c.get("image")) for c in row] for row in r.rows], "num_rows": r.total,
            "offset": r.offset, "errors": r.errors}


def repo_settings(ctx: Ctx) -> dict[str, Any]:
    repo = ctx.repo(write=True)
    private = visibility(ctx.json(), None)
    with ctx.hub.sessions() as s, s.begin():
        row = s.get(Repo, repo.id)
        if private is not None:
            row.private = bool(private)
        row.updated = db.now()
    return {}


def _page(ctx: Ctx, total: int, page_size: int) -> tuple[slice, dict[str, str]]:
    """This request's slice of a listing of `total` items, and the Link header to the next page (cursor-based)."""
    cursor = ctx.request.query_params.get("cursor", "0")
    start = int(cursor) if cursor.isdigit() else 0
    headers = {}
    if start + page_size < total:
        params = {**ctx.request.query_params, "cursor": str(start + page_size)}
        query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
        headers["Link"] = f'<{str(ctx.request.url).split("?", 1)[0]}?{query}>; rel="next"'
    return slice(start, start + page_size), headers


def repo_tree(ctx: Ctx) -> JSONResponse:
    repo = ctx.repo()
    if not ctx.args:
        raise HubError(404, "tree needs a revision", "RevisionNotFound")
    sha = ctx.commit_of(repo, ctx.args[0])
    path = "/".join(ctx.args[1:]).strip("/")
    git = ctx.hub.git(repo)
    q = ctx.request.query_params
    if path:
        gitrepo.check_path(path)
        e = git.entry(sha, path)
        if e is None or e.kind != "directory":
            raise HubError(404, f"{path} is not a folder at {ctx.args[0]}", "EntryNotFound")
    entries = git.ls(sha, path, recursive=q.get("recursive", "").lower() in ("1", "true"))
    expand = q.get("expand", "").lower() in ("1", "true")
    page, headers = _page(ctx, len(entries), min(ctx.hub.page_size, 50) if expand else ctx.hub.page_size)
    out = [_entry_json(e, git.last_commit_for(sha, e.path) if expand else None) for e in entries[page]]
    return JSONResponse(out, headers=headers)


def repo_paths_info(ctx: Ctx) -> list[dict[str, Any]]:
    repo = ctx.repo()
    sha = ctx.commit_of(repo, ctx.args[0] if ctx.args else "main")
    ctype = ctx.request.headers.get("content-type", "")
    if "json" in ctype:
        body = ctx.json()
        paths, expand = field(body, "paths", list, []), field(body, "expand", bool, False)
    else:
        try:
            form = parse_qs(ctx.body.decode(), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise HubError(400, "the form is not valid UTF-8") from None
        paths, expand = form.get("paths", []), form.get("expand", ["False"])[0].lower() == "true"
    git = ctx.hub.git(repo)
    out = []
    for p in paths:
        if not isinstance(p, str):
            raise HubError(400, "paths must be a list of strings")
        p = gitrepo.check_path(p.strip("/"))
        e = git.entry(sha, p)
        if e is not None:
            out.append(_entry_json(e, git.last_commit_for(sha, p) if expand else None))
    return out


def repo_refs(ctx: Ctx) -> dict[str, Any]:
    repo = ctx.repo()
    refs = ctx.hub.git(repo).refs()
    branches = [{"name": r.removeprefix("refs/heads/"), "ref": r, "targetCommit": c}
                for r, c in refs.items() if r.startswith("refs/heads/")]
    tags = [{"name": r.removeprefix("refs/tags/"), "ref": r, "targetCommit": c}
            for r, c in refs.items() if r.startswith("refs/tags/")]
    return {"branches": branches, "converts": [], "tags": tags, "pullRequests": []}


def repo_commits(ctx: Ctx) -> JSONResponse:
    repo = ctx.repo()
    sha = ctx.commit_of(repo, ctx.args[0] if ctx.args else "main")
    git = ctx.hub.git(repo)
    page, headers = _page(ctx, git.count_commits(sha), 50)
    commits = git.log(sha, limit=page.stop - page.start, skip=page.start)
    return JSONResponse([{"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
                          "authors": [{"user": c.author, "avatar": None}]} for c in commits], headers=headers)


def repo_preupload(ctx: Ctx) -> dict[str, Any]:
    repo = ctx.repo(write=True)
    git = ctx.hub.git(repo)
    sha = ctx.commit_of(repo, ctx.args[0] if ctx.args else "main")
    files = objects(ctx.json(), "files")
    checked = []
    for f in files:
        path = gitrepo.check_path(field(f, "path", str, "", "a file"))
        try:
            sample = base64.b64decode(field(f, "sample", str, "", "a file"))
        except binascii.Error:
            raise HubError(400, f"sample of {path} is not base64") from None
        checked.append((path, sample, field(f, "size", int, 0, "a file")))
    tracked = gitattributes.lfs_tracked(git, sha, [path for path, _, _ in checked])
    out = []
    for path, sample, size in checked:
        lfs = size >= 10 * (1 << 20) or b"\x00" in sample or path in tracked
        existing = git.entry(sha, path)
        oid = None
        if existing is not None and existing.kind == "file":
            oid = existing.lfs[0] if existing.lfs else existing.oid
        out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
    return {"files": out, "commitOid": sha}


def repo_commit(ctx: Ctx) -> dict[str, Any]:
    repo = ctx.repo(write=True)
    if ctx.request.query_params.get("create_pr") in ("1", "true", "True"):
        raise HubError(400, "this hub does not do pull requests; commit to a branch instead")
    branch = ctx.args[0] if ctx.args else "main"
    header: dict[str, Any] = {}
    changes: list[gitrepo.Change] = []
    lfs_paths: list[str] = []
    for n, line in enumerate(ctx.body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise HubError(400, f"commit line {n} is not a JSON object with key and value") from None
        if not isinstance(value, dict):
            raise HubError(400, f"commit line {n}: value must be an object")
        where = f"commit line {n}"
        if key == "header":
            header = value
        elif key == "file":
            path = gitrepo.check_path(field(value, "path", str, "", where))
            content = field(value, "content", str, "", where)
            try:
                data = base64.b64decode(content, validate=True) \
                    if field(value, "encoding", str, "", where) == "base64" else content.encode()
            except (binascii.Error, UnicodeEncodeError):
                raise HubError(400, f"content of {path} is not valid base64 or UTF-8") from None
            changes.append(gitrepo.Change(path, data=data))
        elif key == "lfsFile":
            path = gitrepo.check_path(field(value, "path", str, "", where))
            oid, size = field(value, "oid", str, "", where), field(value, "size", int, None, where)
            if field(value, "algo", str, "sha256", where) != "sha256" or not gitrepo.SHA256.match(oid):
                raise HubError(400, f"lfsFile {path}: oid must be a sha256 hex digest")
            with ctx.hub.sessions() as s:
                obj = s.get(RepoObject, (repo.id, oid))
            if obj is None or not ctx.hub.storage.exists(oid):
                raise HubError(422, f"lfsFile {path}: object {oid} was never uploaded to {repo.repo_id}; "
                                    "upload it through the LFS batch API first")
            if size is not None and size != obj.size:
                raise HubError(422, f"lfsFile {path}: size {size} does not match the uploaded {obj.size} bytes")
            changes.append(gitrepo.Change(path, lfs=(oid, obj.size)))
            lfs_paths.append(path)
        elif key in ("deletedFile", "deletedFolder"):
            path = gitrepo.check_path(field(value, "path", str, "", where).rstrip("/"))
            changes.append(gitrepo.Change(path, delete=True, folder=key == "deletedFolder"))
        else:
            raise HubError(400, f"commit line {n}: operation {key!r} is not supported by this hub")
    if not changes:
        raise HubError(400, "this commit has no operations; nothing was committed")
    message = text(field(header, "summary", str, "", "the commit header").strip() or "commit", "summary")
    description = text(field(header, "description", str, "", "the commit header"), "description")
    if description:
        message += "\n\n" + description
    parent = field(header, "parentCommit", str, None, "the commit header")
    git = ctx.hub.git(repo)
    # The slow part, writing the blobs, before the lock: a big commit does not hold up small ones.
    changes = git.store(changes)
    # One committer per repo: in this process, and across hub processes sharing a PostgreSQL database.
    with ctx.hub.lock(repo), db.advisory_lock(ctx.hub.sessions, repo.id):
        head = git.refs().get(f"refs/heads/{branch}")
        if head is None:
            raise HubError(404, f"branch {branch!r} not found in {repo.repo_id}", "RevisionNotFound")
        # Make sure git-lfs clients smudge the LFS files this commit adds.
        tracked = gitattributes.lfs_tracked(git, head, lfs_paths)
        missing = [p for p in lfs_paths if p not in tracked]
        if missing:
            e = git.entry(head, ".gitattributes")
            attrs = git.blob(e.oid).decode() if e else ""
            attrs += ("" if not attrs or attrs.endswith("\n") else "\n") + "".join(
                gitattributes.lfs_line(p) for p in dict.fromkeys(missing))
            changes.append(gitrepo.Change(".gitattributes", attrs.encode()))
        author = ctx.caller.user.name
        try:
            oid = git.commit(branch, changes, message, (author, f"{author}@zupu.hub"), parent_commit=parent)
        except gitrepo.StaleParent as e:
            raise HubError(412, str(e)) from None
        except gitrepo.NothingToCommit as e:
            raise HubError(400, str(e)) from None
        except gitrepo.MissingEntry as e:
            raise HubError(404, str(e), "EntryNotFound") from None
    with ctx.hub.sessions() as s, s.begin():
        s.get(Repo, repo.id).updated = db.now()
    return {"commitUrl": f"{ctx.url(repo)}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None,
            "success": True}


def repo_branch_create(ctx: Ctx) -> Response:
    repo = ctx.repo(write=True)
    branch = "/".join(ctx.args)
    _check_ref_name(branch)
    git = ctx.hub.git(repo)
    start = ctx.commit_of(repo, field(ctx.json(), "startingPoint", str, "main"))
    if not git.update_ref(f"refs/heads/{branch}", start, None):
        raise HubError(409, f"branch {branch!r} already exists")
    return JSONResponse({})


def repo_branch_delete(ctx: Ctx) -> dict[str, Any]:
    repo = ctx.repo(write=True)
    branch = "/".join(ctx.args)
    if branch == "main":
        raise HubError(403, "the main branch cannot be deleted")
    git = ctx.hub.git(repo)
    if f"refs/heads/{branch}" not in git.refs():
        raise HubError(404, f"branch {branch!r} not found", "RevisionNotFound")
    git.delete_ref(f"refs/heads/{branch}")
    return {}


def repo_tag_create(ctx: Ctx) -> dict[str, Any]:
    repo = ctx.repo(write=True)
    body = ctx.json()
    tag = field(body, "tag", str, "")
    _check_ref_name(tag)
    message = text(field(body, "message", str, ""), "message")
    git = ctx.hub.git(repo)
    commit = ctx.commit_of(repo, "/".join(ctx.args) or "main")
    if f"refs/tags/{tag}" in git.refs():
        raise HubError(409, f"tag {tag!r} already exists")
    git.create_tag(tag, commit, message, (ctx.caller.user.name, f"{ctx.caller.user.name}@zupu.hub"))
    return {}


def repo_tag_delete(ctx: Ctx) -> dict[str, Any]:
    repo = ctx.repo(write=True)
    tag = "/".join(ctx.args)
    git = ctx.hub.git(repo)
    if f"refs/tags/{tag}" not in git.refs():
        raise HubError(404, f"tag {tag!r} not found", "RevisionNotFound")
    git.delete_ref(f"refs/tags/{tag}")
    return {}


def _check_ref_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}", name) or ".." in name or name.endswith((".lock", "/")) \
            or "//" in name:
        raise HubError(400, f"{name!r} is not a valid branch or tag name")


REPO_API: dict[tuple[str, str], Callable[[Ctx], Any]] = {
    ("GET", ""): repo_info,
    ("GET", "revision"): lambda ctx: repo_info(Ctx(**{**ctx.__dict__, "args": ["revision", *ctx.args]})),
    ("PUT", "settings"): repo_settings,
    ("GET", "tree"): repo_tree,
    ("GET", "viewer"): repo_viewer,
    ("GET", "runtime"): repo_runtime,
    ("POST", "paths-info"): repo_paths_info,
    ("GET", "refs"): repo_refs,
    ("GET", "commits"): repo_commits,
    ("POST", "preupload"): repo_preupload,
    ("POST", "commit"): repo_commit,
    ("POST", "branch"): repo_branch_create,
    ("DELETE", "branch"): repo_branch_delete,
    ("POST", "tag"): repo_tag_create,
    ("DELETE", "tag"): repo_tag_delete,
}


# --- downloads ------------------------------------------------------------------------------------------------
def _resolve(hub: Hub, kind: str, repo_id: str, revision: str, path: str, request: Request):
    from zupu.hub import web

    # The Authorization header, else the web pages' sign-in cookie.
    repo = hub.find_repo(web.caller(hub, request), kind, repo_id)
    git = hub.git(repo)
    sha = git.resolve(revision)
    if sha is None:
        raise HubError(404, f"revision {revision!r} not found in {repo_id}", "RevisionNotFound")
    gitrepo.check_path(path)
    found = git.file(sha, path)
    headers = {"X-Repo-Commit": sha, "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Etag,X-Linked-Size",
               # Repo files are served from the pages' origin: never as a page that could run script there.
               "X-Content-Type-Options": "nosniff", "Content-Security-Policy": RAW_CSP}
    if path.lower().endswith(ACTIVE_SUFFIXES):
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1], safe='')}"
    if found is None:
        # The commit header lets the client remember that the file does not exist at that commit.
        return JSONResponse({"error": f"Entry not found: {path} at {revision}"}, status_code=404,
                            headers={**headers, "X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
    e, data = found
    if e.lfs:
        oid, size = e.lfs
        if not _linked(hub, repo.id, oid) or not hub.storage.exists(oid, size):
            raise HubError(404, f"the LFS object of {path} is missing on this hub", "EntryNotFound")
        headers.update({"ETag": f'"{oid}"', "X-Linked-Etag": f'"{oid}"', "X-Linked-Size": str(size)})
        return _file_response(request, hub.storage, oid, size, headers)
    headers["ETag"] = f'"{e.oid}"'
    return _bytes_response(request, data, headers)


def _range(request: Request, size: int) -> tuple[int, int] | None:
    """The (start, end inclusive) of a `Range: bytes=a-b` header, None for the whole file; 416 if unsatisfiable.

    A range that does not parse, like `bytes=5-2` (last before first), is ignored (RFC 9110, 14.1.1 and 14.2)."""
    header = request.headers.get("range")
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    a, _, b = header[6:].strip().partition("-")
    if not (a.isdigit() or a == "") or not (b.isdigit() or b == "") or a == b == "" or (a and b and int(b) < int(a)):
        return None
    if a == "":
        start, end = max(0, size - int(b)), size - 1
    else:
        start, end = int(a), (int(b) if b else size - 1)
    end = min(end, size - 1)
    if start > end or start >= size:
        raise HubError(416, f"range {header} is outside the file's {size} bytes")
    return start, end


def _file_response(request: Request, storage: Storage, oid: str, size: int, headers: dict[str, str]) -> Response:
    rng = _range(request, size)
    start, end = rng or (0, size - 1)
    length = end - start + 1 if size else 0
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(length)}
    status = 200
    if rng:
        status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return StreamingResponse(storage.read(oid, start, length), status_code=status, headers=headers,
                             media_type="application/octet-stream")


def _bytes_response(request: Request, data: bytes, headers: dict[str, str]) -> Response:
    rng = _range(request, len(data))
    headers = {**headers, "Accept-Ranges": "bytes"}
    status = 200
    if rng:
        status, headers["Content-Range"] = 206, f"bytes {rng[0]}-{rng[1]}/{len(data)}"
        data = data[rng[0]:rng[1] + 1]
    headers["Content-Length"] = str(len(data))
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return Response(data, status_code=status, headers=headers, media_type="application/octet-stream")
