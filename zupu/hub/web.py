"""The hub's web pages: browse repos, read model cards, list files and commits, download.

Server-rendered HTML at huggingface.co's URL shapes, no JavaScript:

    /  /models  /datasets  /spaces  [?search=&author=]     repo lists (home: all three kinds)
    /{ns}                                                  a user's or organisation's repos
    /{ns}/{name}                                           the card: README.md rendered, front matter as a table
    /{ns}/{name}/tree/{rev}[/{dir}]                        files, sizes, LFS badges, last commits
    /{ns}/{name}/blob/{rev}/{path}                         a text preview, or the file's facts and a download link
    /{ns}/{name}/commits/{rev}[?p=N]                       history
    /datasets/{ns}/{name}/viewer/{rev}[?config=&split=&p=] the dataset viewer (viewer.py): splits, schema, rows
    /spaces/{ns}/{name}                                    the Space's app, embedded from its own origin (spaces.py)
    /login (POST token), /logout (POST)                    the token kept in an HttpOnly SameSite=Strict cookie

Datasets and spaces live under `/datasets/` and `/spaces/`; downloads are the `resolve` URLs that the
clients use. server.py routes git, LFS and `resolve` first and hands the remaining GETs of the
catch-all here, so no page shadows a client's URL.

Safety: everything from a repo (README, file names, commit messages, YAML) goes through Jinja2's
autoescaping; Markdown is rendered by markdown-it-py with raw HTML off (an HTML tag shows as text)
and its link checker (no `javascript:` links); the pages carry a Content-Security-Policy that runs
no script at all (a Space's page may frame that Space's own origin, nothing else).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from zupu.hub import gitrepo, limits
from zupu.hub.db import HubError, Repo, User
from zupu.hub.server import KINDS, PREFIX, Caller, Hub, base_url, error_response

COOKIE = "zupu_token"
PREVIEW_LIMIT = 500_000  # bytes of text shown inline on a blob page; larger files are download-only
CARD_LIMIT = 1 << 20  # a README larger than this is not shown
MARKDOWN_LIMIT = 100_000  # characters of Markdown rendered (worst inputs take ~25 us each); past it, plain text
TREE_PER_PAGE = 500
COMMITS_PER_PAGE = 50
LAST_COMMITS = 100  # a folder listing looks up the last commit of at most this many entries (one git log each)
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
HERE = Path(__file__).parent
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                        trim_blocks=True, lstrip_blocks=True)
KIND_LABEL = {"model": "Model", "dataset": "Dataset", "space": "Space"}
PLURAL = {v: k for k, v in KINDS.items()}


def caller(hub: Hub, request: Request) -> Caller:
    """The Authorization header if sent, else the sign-in cookie (an invalid cookie reads as anonymous)."""
    if request.headers.get("authorization"):
        return hub.caller(request.headers["authorization"])
    token = request.cookies.get(COOKIE)
    if token:
        try:
            return hub.caller(f"Bearer {token}")
        except HubError:
            pass
    return Caller(None, None, False)


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


# --- formatting ------------------------------------------------------------------------------------------
def human_size(n: int) -> str:
    """Bytes as the HF Hub shows them: decimal units, three significant digits."""
    if n < 1000:
        return f"{n} Bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
    raise AssertionError("unreachable")


def when(iso: str) -> str:
    return dt.datetime.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S").strftime("%Y-%m-%d %H:%M UTC")


TEMPLATES.filters.update(size=human_size, when=when, q=lambda s: quote(str(s), safe=""),
                         qpath=lambda s: quote(str(s), safe="/"))


def repo_url(kind: str, repo_id: str) -> str:
    return "/" + PREFIX[kind] + "/".join(quote(p, safe="") for p in repo_id.split("/"))


# --- the model card ----------------------------------------------------------------------------------------
_MD = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def split_front_matter(text: str) -> tuple[dict[str, Any] | None, str | None, str]:
    """(metadata, error, body) of a README with optional `---` YAML front matter."""
    if not text.startswith("---"):
        return None, None, text
    lines = text.splitlines(keepends=True)
    if lines[0].strip() != "---":
        return None, None, text
    for i, line in enumerate(lines[1:], 1):
        if line.strip() == "---":
            raw, body = "".join(lines[1:i]), "".join(lines[i + 1:])
            try:
                meta = limits.load_yaml(raw)
            except yaml.YAMLError as e:
                return None, f"the YAML front matter does not parse: {e}", body
            if meta is not None and not isinstance(meta, dict):
                return None, "the YAML front matter is not a mapping", body
            return meta or {}, None, body
    return None, None, text


def meta_value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(meta_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {meta_value(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def render_markdown(text: str, base: str, rev: str) -> str:
    """README Markdown -> HTML; relative images load from `resolve`, relative links open the blob page.
    Over MARKDOWN_LIMIT characters, the text as it is."""
    if len(text) > MARKDOWN_LIMIT:
        return f"<pre>{escape(text)}</pre>"
    return _rendered(text, base, rev)


@functools.lru_cache(maxsize=64)  # a card costs its rendering once, however often it is viewed
def _rendered(text: str, base: str, rev: str) -> str:
    tokens = _MD.parse(text)
    for tok in tokens:
        for child in tok.children or []:
            attr = {"image": "src", "link_open": "href"}.get(child.type)
            target = child.attrGet(attr) if attr else None
            if target and not urlsplit(target).scheme and not target.startswith(("/", "#")):
                path = target.split("#", 1)[0].split("?", 1)[0].removeprefix("./")
                view = "resolve" if child.type == "image" else "blob"
                child.attrSet(attr, f"{base}/{view}/{quote(rev, safe='')}/{quote(path, safe='/')}")
    return _MD.renderer.render(tokens, _MD.options, {})


# --- pages ---------------------------------------------------------------------------------------------------
def page(request: Request, template: str, status: int = 200, headers: dict[str, str] | None = None,
         **context: Any) -> HTMLResponse:
    c: Caller = context.pop("me")
    html = TEMPLATES.get_template(template).render(me=c.user.name if c.user else None, request=request,
                                                   kind_label=KIND_LABEL, plural=PLURAL, **context)
    out = HTMLResponse(html, status_code=status, headers={
        "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store", **(headers or {})})
    if request.cookies.get(COOKIE) and c.user is None and not request.headers.get("authorization"):
        out.delete_cookie(COOKIE, path="/")  # revoked or unknown: forget it
    return out


def error_page(hub: Hub, request: Request, e: HubError) -> Response:
    """HTML for a browser (it sends Accept: text/html), the API's JSON error for any other client."""
    if not wants_html(request):
        return error_response(e)
    headers = {"X-Error-Message": str(e).encode("ascii", "replace").decode()}
    if e.code:
        headers["X-Error-Code"] = e.code
    try:
        me = caller(hub, request)
    except HubError:  # the page is the answer to a bad Authorization header
        me = Caller(None, None, False)
    return page(request, "error.html", e.status, headers, me=me, error=e)


def _visible(hub: Hub, c: Caller, kinds: tuple[str, ...], search: str, author: str) -> list[Repo]:
    with hub.sessions() as s:
        stmt = select(Repo).where(Repo.type.in_(kinds)).order_by(Repo.updated.desc(), Repo.id.desc())
        if author:
            stmt = stmt.where(Repo.namespace == author)
        rows = s.scalars(stmt).all()
    mine: dict[str, bool] = {}

    def may_see(r: Repo) -> bool:
        if not r.private:
            return True
        if r.namespace not in mine:
            mine[r.namespace] = c.user is not None and hub.member_of(c.user, r.namespace)
        return mine[r.namespace]

    return [r for r in rows if search.lower() in r.repo_id.lower() and may_see(r)]


def list_page(hub: Hub, request: Request, kinds: tuple[str, ...], author: str = "") -> HTMLResponse:
    c = caller(hub, request)
    search = request.query_params.get("search", "").strip()
    author = author or request.query_params.get("author", "").strip()
    repos = _visible(hub, c, kinds, search, author)
    title = PLURAL[kinds[0]].capitalize() if len(kinds) == 1 else (author or "zupu hub")
    return page(request, "list.html", me=c, repos=repos, kinds=kinds, search=search, author=author, title=title,
                repo_url=repo_url, action=request.url.path)


class RepoView:
    """What every repo page shows in its header: the repo, its revision, refs, and the caller."""

    def __init__(self, hub: Hub, request: Request, kind: str, repo_id: str, rev: str):
        self.caller = caller(hub, request)
        self.hub_storage = hub.storage
        self.repo = hub.find_repo(self.caller, kind, repo_id)
        self.git = hub.git(self.repo)
        self.rev = rev
        self.sha = self.git.resolve(rev)
        if self.sha is None:
            raise HubError(404, f"revision {rev!r} not found in {repo_id}", "RevisionNotFound")
        refs = self.git.refs()
        self.branches = sorted(r.removeprefix("refs/heads/") for r in refs if r.startswith("refs/heads/"))
        self.tags = sorted(r.removeprefix("refs/tags/") for r in refs if r.startswith("refs/tags/"))
        self.base = repo_url(kind, repo_id)
        self.clone_url = base_url(request) + self.base

    def context(self, tab: str, view: str = "tree", path: str = "") -> dict[str, Any]:
        return {"me": self.caller, "repo": self.repo, "base": self.base, "rev": self.rev,
                "branches": self.branches, "tags": self.tags, "tab": tab, "view": view, "path": path,
                "clone_url": self.clone_url}


def card_page(v: RepoView, request: Request) -> HTMLResponse:
    e = v.git.entry(v.sha, "README.md")
    meta = meta_error = html = None
    too_big = False
    if e is not None and e.kind == "file" and not e.lfs:
        if e.size > CARD_LIMIT:
            too_big = True
        else:
            meta, meta_error, body = split_front_matter(v.git.blob(e.oid).decode("utf-8", errors="replace"))
            html = render_markdown(body, v.base, v.rev)
    files = [f for f in v.git.ls(v.sha, recursive=True) if f.kind == "file"]
    total = sum(f.lfs[1] if f.lfs else f.size for f in files)
    last = v.git.log(v.sha, limit=1)
    meta_rows = [(str(k), meta_value(val)) for k, val in (meta or {}).items()]
    return page(request, "card.html", **v.context("card"), card=html, meta=meta_rows, meta_error=meta_error,
                too_big=too_big, n_files=len(files), total=total, last=last[0] if last else None)


def tree_page(v: RepoView, request: Request, path: str) -> HTMLResponse:
    if path:
        gitrepo.check_path(path)
        e = v.git.entry(v.sha, path)
        if e is None or e.kind != "directory":
            raise HubError(404, f"{path} is not a folder at {v.rev}", "EntryNotFound")
    entries = sorted(v.git.ls(v.sha, path), key=lambda e: (e.kind != "directory", e.path.lower()))
    p = request.query_params.get("p", "0")
    p = int(p) if p.isdigit() else 0
    shown = entries[p * TREE_PER_PAGE:(p + 1) * TREE_PER_PAGE]
    rows = [(e, v.git.last_commit_for(v.sha, e.path) if i < LAST_COMMITS else None) for i, e in enumerate(shown)]
    last = v.git.last_commit_for(v.sha, path) if path else (v.git.log(v.sha, limit=1) or [None])[0]
    return page(request, "tree.html", **v.context("files", "tree", path), rows=rows, last=last,
                crumbs=_crumbs(path), p=p, more=(p + 1) * TREE_PER_PAGE < len(entries), total=len(entries))


def blob_page(v: RepoView, request: Request, path: str) -> HTMLResponse:
    gitrepo.check_path(path)
    e = v.git.entry(v.sha, path)
    if e is None:
        raise HubError(404, f"{path} does not exist at {v.rev}", "EntryNotFound")
    if e.kind == "directory":
        return RedirectResponse(f"{v.base}/tree/{quote(v.rev, safe='')}/{quote(path, safe='/')}", 302)
    text = None
    if not e.lfs and e.size <= PREVIEW_LIMIT:
        data = v.git.blob(e.oid)
        if b"\x00" not in data:
            with contextlib.suppress(UnicodeDecodeError):
                text = data.decode("utf-8")
    last = v.git.last_commit_for(v.sha, path)
    return page(request, "blob.html", **v.context("files", "blob", path), entry=e, text=text, last=last,
                size=e.lfs[1] if e.lfs else e.size, crumbs=_crumbs(path), limit=PREVIEW_LIMIT)


def commits_page(v: RepoView, request: Request) -> HTMLResponse:
    p = request.query_params.get("p", "0")
    p = int(p) if p.isdigit() else 0
    total = v.git.count_commits(v.sha)
    commits = v.git.log(v.sha, limit=COMMITS_PER_PAGE, skip=p * COMMITS_PER_PAGE)
    return page(request, "commits.html", **v.context("commits", "commits"), commits=commits, p=p, total=total,
                more=(p + 1) * COMMITS_PER_PAGE < total)


def space_page(hub: Hub, v: RepoView, request: Request) -> HTMLResponse:
    """The Space's app in an iframe from its own origin, its runtime stage, and (for its members) its logs."""
    space = hub.spaces.space(v.repo)
    host = hub.spaces.host(v.repo)
    src = host + "/" + (f"?__sign={hub.spaces.sign(v.repo.id)}" if v.repo.private else "")
    runtime = space.runtime(v.repo, v.sha)
    member = v.caller.user is not None and hub.member_of(v.caller.user, v.repo.namespace)
    csp = CSP.replace("default-src 'none';", f"default-src 'none'; frame-src {host};")
    return page(request, "space.html", headers={"Content-Security-Policy": csp}, **v.context("card"), src=src,
                host=host, runtime=runtime, logs=space.logs() if member else None)


def viewer_page(v: RepoView, request: Request) -> HTMLResponse:
    """All splits with their schema and first rows, or (`?config=&split=&p=`) one split's rows, a page at a time.
    What the viewer cannot read is said in place of its rows; the rest of the page is unaffected."""
    from zupu.hub import viewer

    if v.repo.type != "dataset":
        raise HubError(404, "only dataset repos have a viewer")
    q = request.query_params
    sections, error = [], None
    p = int(q["p"]) if q.get("p", "").isdigit() else 0
    try:
        splits = viewer.repo_splits(v.git, v.sha)
        if "split" in q:
            splits = [viewer.find(splits, q.get("config", "default"), q["split"])]
    except viewer.ViewerError as e:
        splits, error = [], str(e)
    single = "split" in q and not error
    for s in splits:
        try:
            rows = viewer.rows(v.git, v.hub_storage, s, p * viewer.ROWS_PER_PAGE if single else 0,
                               viewer.ROWS_PER_PAGE if single else viewer.FIRST_ROWS)
            sections.append((s, rows, None))
        except viewer.ViewerError as e:
            sections.append((s, None, str(e)))
    return page(request, "viewer.html", **v.context("viewer", "viewer"), sections=sections, error=error,
                single=single, p=p, per_page=viewer.ROWS_PER_PAGE)


def _crumbs(path: str) -> list[tuple[str, str]]:
    parts = path.split("/") if path else []
    return [(name, "/".join(parts[:i + 1])) for i, name in enumerate(parts)]


def repo_page(hub: Hub, request: Request, kind: str, parts: list[str]) -> Response:
    """A GET of the catch-all that is not git, LFS or `resolve`: a namespace or a repo page, else 404."""
    if not parts or parts == [""]:
        return list_page(hub, request, (kind,))
    if len(parts) == 1:
        with hub.sessions() as s:
            known = s.scalar(select(User).where(User.name == parts[0])) is not None
        if not known or kind != "model":
            raise HubError(404, f"no user or organisation named {parts[0]!r}")
        return list_page(hub, request, tuple(KINDS.values()), author=parts[0])
    ns, name, view, args = parts[0], parts[1], (parts[2] if len(parts) > 2 else ""), parts[3:]
    if name.endswith(".git") and not view:
        return RedirectResponse(repo_url(kind, f"{ns}/{name.removesuffix('.git')}"), 302)
    repo_id = f"{ns}/{name}"
    if not view:
        v = RepoView(hub, request, kind, repo_id, "main")
        return space_page(hub, v, request) if kind == "space" else card_page(v, request)
    if view == "viewer":
        return viewer_page(RepoView(hub, request, kind, repo_id, args[0] if args else "main"), request)
    if view in ("tree", "commits"):
        rev = args[0] if args else "main"
        v = RepoView(hub, request, kind, repo_id, rev)
        return tree_page(v, request, "/".join(args[1:]).strip("/")) if view == "tree" else commits_page(v, request)
    if view == "blob" and len(args) >= 2:
        return blob_page(RepoView(hub, request, kind, repo_id, args[0]), request, "/".join(args[1:]))
    raise HubError(404, f"no page /{'/'.join(parts)} here: a repo has tree/, blob/, commits/ and resolve/ pages")


# --- sign in and out ------------------------------------------------------------------------------------------
def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    o = urlsplit(origin)
    return o.netloc == request.headers.get("host", "")


def register(app: FastAPI, hub: Hub) -> None:
    """The page routes that are not under a repo; call before the catch-all route is added."""

    def lister(kinds: tuple[str, ...]):
        async def route(request: Request):
            return await _render(hub, request, list_page, kinds)

        return route

    app.add_api_route("/", lister(tuple(KINDS.values())), methods=["GET", "HEAD"])  # home: all three kinds
    for plural, kind in KINDS.items():
        app.add_api_route(f"/{plural}", lister((kind,)), methods=["GET", "HEAD"])

    @app.api_route("/-/style.css", methods=["GET", "HEAD"])
    async def style():
        return FileResponse(HERE / "static" / "style.css", media_type="text/css",
                            headers={"Cache-Control": "max-age=3600"})

    @app.get("/login")
    async def login_form(request: Request):
        return page(request, "login.html", me=caller(hub, request), error=None, next=_next(request))

    @app.post("/login")
    async def login(request: Request):
        if not _same_origin(request):
            return error_page(hub, request, HubError(403, "sign-in must come from this hub's own page"))
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        token = (form.get("token") or [""])[0].strip()
        nxt = _next(request, (form.get("next") or ["/"])[0])
        try:
            c = await run_in_threadpool(hub.caller, f"Bearer {token}") if token else None
        except HubError:
            c = None
        if c is None or c.user is None:
            return page(request, "login.html", 401, me=Caller(None, None, False), next=nxt,
                        error="That token is not valid (or was revoked). Create one with `zupu hub token create`.")
        out = RedirectResponse(nxt, 303)
        out.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                       secure=request.url.scheme == "https", max_age=30 * 24 * 3600)
        return out

    @app.post("/logout")
    async def logout(request: Request):
        if not _same_origin(request):  # another site must not sign the visitor out
            return error_page(hub, request, HubError(403, "sign-out must come from this hub's own page"))
        out = RedirectResponse("/", 303)
        out.delete_cookie(COOKIE, path="/")
        return out


def _next(request: Request, value: str | None = None) -> str:
    """Where to go after signing in: a path on this hub only (never `//elsewhere` or a full URL)."""
    value = value if value is not None else request.query_params.get("next", "/")
    return value if value.startswith("/") and not value.startswith(("//", "/\\")) else "/"


async def serve_page(hub: Hub, request: Request, kind: str, parts: list[str]) -> Response:
    """Entry point from server.py's catch-all for GET and HEAD."""
    return await _render(hub, request, repo_page, kind, parts)


async def _render(hub: Hub, request: Request, fn, *args) -> Response:
    """`fn(hub, request, *args)` in a worker thread (pages run git); a HubError becomes an error page."""
    try:
        return await run_in_threadpool(fn, hub, request, *args)
    except HubError as e:
        return error_page(hub, request, e)
    except gitrepo.BadPath as e:
        return error_page(hub, request, HubError(422, str(e)))
