"""Spaces: each served from an origin of its own, static files or a gradio app in a process of its own.

On huggingface.co a Space runs at `ORG-NAME.hf.space`, another site than the hub's pages, so its script
can never act with a visitor's hub cookie. Here each Space gets a port of its own on `--spaces-host`
(default `localhost` while the pages are on `127.0.0.1`: browsers key cookies by host name, not port, so
the name must differ from the pages' for the cookie to stay home; on a real domain, point another domain
at the hub). `HfApi().space_info` gives that address in `host`, and `/spaces/ORG/NAME` embeds it.

The listener of a Space (a uvicorn server of its own, in a thread) serves:
- a static Space: its files at the head of `main` (`/` is `index.html`);
- a gradio Space, when the hub runs with `--run-spaces`: a reverse proxy to `python app.py` started on
  demand for the current head of `main`, restarted on a new commit, stopped when idle. The app runs with a
  clean environment in its own folder outside the hub's data, and in a mount namespace where the data
  folder and the SQLite database are covered by empty mounts (where Linux user namespaces are allowed;
  else, for a hub running as root, as user nobody with the data folder closed to others), so it cannot
  read repos, LFS objects, the database, tokens or the hub's secret. Visitors' `Authorization`
  headers and hub cookies are stripped before a request reaches the app. A crash is reported on the
  Space's page and in its runtime (RUNTIME_ERROR, with the log's tail); a hung app only times out its own
  requests: the hub's pages and API run in another thread and the app in another process.

Private Spaces: the listener admits a hub token (`Authorization: Bearer`, what gradio_client sends) of a
user who may read the Space, or a short-lived signed link (`?__sign=`) that the Space's page puts in its
iframe; the link sets a cookie for the Space's own origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import mimetypes
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zupu.hub import gitrepo
from zupu.hub.db import HubError, Repo

if TYPE_CHECKING:
    from zupu.hub.server import Hub

SDKS = ("static", "gradio")
APP_FILE = {"static": "index.html", "gradio": "app.py"}
SPACE_COOKIE = "zupu_space"
SIGN_TTL = 3600  # seconds a signed iframe link (and the cookie it sets) admits a visitor to a private Space
HEAD_TTL = 2.0  # seconds a Space's head commit is trusted before `main` is read again
LOG_TAIL = 200  # lines of a Space's log shown on its page
HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "host", "content-length"}
MAX_PROXY_BODY = 64 << 20  # bytes of a request body forwarded to an app
NOBODY = 65534  # the uid and gid an app runs as where the hub is root and user namespaces are not allowed


def card_sdk(git: gitrepo.Repo, sha: str) -> tuple[str | None, str | None]:
    """(sdk, app_file) from the Space's README front matter, as huggingface.co reads them."""
    from zupu.hub.web import CARD_LIMIT, split_front_matter

    e = git.entry(sha, "README.md")
    if e is None or e.kind != "file" or e.lfs or e.size > CARD_LIMIT:
        return None, None
    meta, _, _ = split_front_matter(git.blob(e.oid).decode("utf-8", errors="replace"))
    sdk = (meta or {}).get("sdk")
    sdk = sdk if sdk in SDKS else None
    app = (meta or {}).get("app_file")
    return sdk, app if isinstance(app, str) else (APP_FILE[sdk] if sdk else None)


def initial_card(name: str, sdk: str) -> bytes:
    return (f"---\ntitle: {name}\nsdk: {sdk}\napp_file: {APP_FILE[sdk]}\npinned: false\n---\n\n"
            f"# {name}\n\nA {sdk} Space.\n").encode()


def _free_port(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


_SANDBOX: bool | None = None


def sandbox_available() -> bool:
    """Whether `unshare` can give a child its own user and mount namespaces here (checked once)."""
    global _SANDBOX
    if _SANDBOX is None:
        exe = shutil.which("unshare")
        _SANDBOX = bool(exe) and sys.platform.startswith("linux") and subprocess.run(
            [exe, "--user", "--map-root-user", "--mount", "true"], capture_output=True, timeout=10).returncode == 0
    return _SANDBOX


@dataclass
class App:
    """One gradio app process: the commit it runs, its private port, folder and log."""

    sha: str
    folder: Path
    log: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    state: str = "BUILDING"  # BUILDING, RUNNING, RUNTIME_ERROR
    error: str | None = None
    last_used: float = field(default_factory=time.monotonic)
    ready: threading.Event = field(default_factory=threading.Event)


class Space:
    """A Space's listener (its own origin) and, for a gradio Space, its app process."""

    def __init__(self, spaces: Spaces, repo_id: int, port: int):
        import uvicorn

        from zupu.hub.limits import server_options

        self.spaces, self.repo_id = spaces, repo_id
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((spaces.bind, port))
        except OSError:  # the remembered port is taken now: another one
            sock.bind((spaces.bind, 0))
        self.port = sock.getsockname()[1]
        self.lock = threading.Lock()
        self.app: App | None = None
        self._head: tuple[float, str | None] = (0.0, None)
        self.server = uvicorn.Server(uvicorn.Config(self.asgi, log_level="warning", lifespan="off", interface="asgi3",
                                                    **server_options()))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name=f"space-{repo_id}")
        self.thread.start()

    # --- what the hub asks -------------------------------------------------------------------------------
    def repo(self) -> Repo:
        with self.spaces.hub.sessions() as s:
            repo = s.get(Repo, self.repo_id)
        if repo is None or repo.type != "space":
            raise HubError(404, "this Space was deleted", "RepoNotFound")
        return repo

    def head(self, repo: Repo) -> str | None:
        t, sha = self._head
        if time.monotonic() - t > HEAD_TTL:
            sha = self.spaces.hub.git(repo).resolve("main")
            self._head = (time.monotonic(), sha)
        return sha

    def runtime(self, repo: Repo, sha: str | None = None) -> dict[str, Any]:
        """huggingface.co's runtime object: stage, hardware, and errorMessage when the app failed."""
        sha = sha or self.head(repo)
        sdk, app_file = card_sdk(self.spaces.hub.git(repo), sha) if sha else (None, None)
        out: dict[str, Any] = {"hardware": {"current": "cpu-basic", "requested": "cpu-basic"}, "sdk": sdk,
                               "gcTimeout": int(self.spaces.idle), "storage": None, "devMode": False}
        if sdk is None or self.spaces.hub.git(repo).entry(sha, app_file) is None:
            return {**out, "stage": "NO_APP_FILE", "errorMessage": f"no {app_file or 'README.md with an sdk'} at main"}
        if sdk == "static":
            return {**out, "stage": "RUNNING"}
        if not self.spaces.run:
            return {**out, "stage": "PAUSED", "errorMessage": "this hub does not run gradio Spaces "
                                                              "(start it with `zupu hub serve --run-spaces`)"}
        app = self.wake(repo, sha)  # asking wakes it, as on huggingface.co: BUILDING until it answers
        if app.state == "RUNTIME_ERROR":
            return {**out, "stage": "RUNTIME_ERROR", "errorMessage": app.error}
        return {**out, "stage": app.state}

    def logs(self) -> str:
        app = self.app
        if app is None or not app.log.exists():
            return ""
        lines = app.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL:])

    # --- the gradio app ------------------------------------------------------------------------------------
    def wake(self, repo: Repo, sha: str) -> App:
        """The app for commit `sha`: the running one, or one being started now (a new commit replaces the old)."""
        with self.lock:
            app = self.app
            if app is not None and app.sha == sha and app.state != "RUNTIME_ERROR" and \
                    (app.proc is None or app.proc.poll() is None):
                app.last_used = time.monotonic()
            elif app is not None and app.sha == sha and app.state == "RUNTIME_ERROR" and \
                    time.monotonic() - app.last_used < self.spaces.retry_after:
                pass  # failed moments ago: say so rather than start it again on every request
            else:
                self.stop()
                app = self.app = self._start(repo, sha)
        return app

    def ensure_app(self, repo: Repo, sha: str) -> App:
        """`wake`, then wait until the app answers (or has failed)."""
        app = self.wake(repo, sha)
        app.ready.wait(self.spaces.start_timeout + 5)
        return app

    def _start(self, repo: Repo, sha: str) -> App:
        git = self.spaces.hub.git(repo)
        self.spaces.started_app()
        self.spaces.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        root = self.spaces.root / str(self.repo_id)
        shutil.rmtree(root, ignore_errors=True)
        folder = root / "app"
        folder.mkdir(parents=True)
        app = App(sha, folder, root / "log.txt")
        _, app_file = card_sdk(git, sha)
        from zupu.hub.viewer import ViewerError, file_bytes

        try:
            for e in git.ls(sha, recursive=True):  # the working copy, LFS files materialised
                if e.kind == "file":
                    dest = folder / e.path
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(file_bytes(git, self.spaces.hub.storage, e, limit=None))
        except (ViewerError, OSError) as e:
            app.state, app.error = "RUNTIME_ERROR", f"the Space's files could not be checked out: {e}"
            app.log.write_text(f"[hub] {app.error}\n")
            app.ready.set()
            return app
        sock = _free_port("127.0.0.1")
        app.port = sock.getsockname()[1]
        sock.close()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "LANG": "C.UTF-8",
               "PYTHONUNBUFFERED": "1", "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(app.port),
               "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_TEMP_DIR": str(folder / ".gradio-tmp"), "MPLCONFIGDIR": str(folder / ".mpl"),
               "SPACE_ID": repo.repo_id, "SYSTEM": "zupu-hub"}
        if os.environ.get("PYTHONPATH"):  # where the hub's own packages come from (a checkout), no secrets
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        cmd = [sys.executable, app_file or "app.py"]
        isolation = "a mount namespace that hides the hub's data" if sandbox_available() else (
            "user nobody, the hub's data folder closed to it (mode 700)" if os.geteuid() == 0 else None)
        as_nobody: dict[str, Any] = {}
        if not sandbox_available() and os.geteuid() == 0:  # no user namespaces (a container), but root: drop it
            self.spaces.hub.data.chmod(0o700)
            for path in [root, *root.rglob("*")]:
                os.chown(path, NOBODY, NOBODY)
            as_nobody = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
        if sandbox_available():
            hidden = [str(self.spaces.hub.data)] + self.spaces.hidden_files
            script = ('mount -t tmpfs -o size=4k,mode=000 none "$1" || exit 97; shift; '
                      'for f in "$@"; do [ "$f" = -- ] && break; '
                      'if [ -e "$f" ]; then mount --bind /dev/null "$f" || exit 97; fi; shift; done; '
                      'shift; exec "$@"')
            cmd = [shutil.which("unshare"), "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
                   *hidden, "--", *cmd]
        with app.log.open("wb") as log:
            log.write(f"[hub] starting {app_file} at {sha[:12]} ("
                      f"{f'sandboxed: {isolation}' if isolation else 'NOT sandboxed: no user namespaces, not root'})\n"
                      .encode())
            log.flush()
            try:
                app.proc = subprocess.Popen(cmd, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True, **as_nobody)
            except OSError as e:  # e.g. user nobody may not run this Python: say so on the page, in the runtime
                app.state, app.error = "RUNTIME_ERROR", f"the app could not be started: {e}"
                log.write(f"[hub] {app.error}\n".encode())
                app.ready.set()
                return app
        threading.Thread(target=self._wait_ready, args=(app,), daemon=True).start()
        return app

    def _wait_ready(self, app: App) -> None:
        import http.client

        deadline = time.monotonic() + self.spaces.start_timeout
        while time.monotonic() < deadline:
            if app.proc.poll() is not None:
                app.state, app.error = "RUNTIME_ERROR", f"the app exited with status {app.proc.returncode}:\n" + \
                    self.logs()[-2000:]
                break
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=2)
                conn.request("GET", "/config")
                if conn.getresponse().status < 500:
                    app.state = "RUNNING"
                    break
            time.sleep(0.2)
        else:
            app.state, app.error = "RUNTIME_ERROR", f"the app did not answer within {self.spaces.start_timeout:.0f} s"
            self._kill(app)
        app.last_used = time.monotonic()
        app.ready.set()

    @staticmethod
    def _kill(app: App) -> None:
        if app.proc is not None and app.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(app.proc.pid, 15)
            try:
                app.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(app.proc.pid, 9)
                app.proc.wait(5)

    def stop(self) -> None:
        """Stop the app (idle, replaced by a new commit, or the hub closing); its log stays for the page."""
        if self.app is not None:
            self._kill(self.app)

    def close(self) -> None:
        self.stop()
        self.server.should_exit = True

    # --- the listener ----------------------------------------------------------------------------------------
    async def asgi(self, scope, receive, send) -> None:
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import HTMLResponse

        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        request = Request(scope, receive)
        try:
            repo, sign_cookie = await run_in_threadpool(self.admit, request)
            response = await self.serve(repo, request)
        except HubError as e:
            body = f"<!doctype html><title>{e.status}</title><pre>{_esc(str(e))}</pre>"
            first = (str(e).splitlines() or [""])[0][:200]
            response = HTMLResponse(body, e.status, headers={"X-Error-Message": first.encode("ascii", "replace")
                                                             .decode()})
            sign_cookie = None
        if sign_cookie:
            response.set_cookie(SPACE_COOKIE, sign_cookie, max_age=SIGN_TTL, httponly=True, samesite="lax", path="/")
        await response(scope, receive, send)

    def admit(self, request) -> tuple[Repo, str | None]:
        """The Space, if this visitor may see it; and a cookie to set when a signed link was followed."""
        repo = self.repo()
        if not repo.private:
            return repo, None
        sign = request.query_params.get("__sign") or request.cookies.get(SPACE_COOKIE)
        if sign and self.spaces.check(repo.id, sign):
            return repo, sign if request.query_params.get("__sign") else None
        auth = request.headers.get("authorization")
        if auth:
            c = self.spaces.hub.caller(auth)
            if c.user is not None and self.spaces.hub.member_of(c.user, repo.namespace):
                return repo, None
        raise HubError(404, "no such Space (or it is private: open it from its page on the hub)", "RepoNotFound")

    async def serve(self, repo: Repo, request):
        from starlette.concurrency import run_in_threadpool

        sha = await run_in_threadpool(self.head, repo)
        sdk, app_file = await run_in_threadpool(card_sdk, self.spaces.hub.git(repo), sha) if sha else (None, None)
        if sdk == "static":
            return await run_in_threadpool(self.static_file, repo, sha, request.url.path)
        if sdk != "gradio":
            raise HubError(503, "this Space has no app yet: its README.md names no sdk (static or gradio)")
        if not self.spaces.run:
            raise HubError(503, "this hub does not run gradio Spaces (start it with `zupu hub serve --run-spaces`)")
        if await run_in_threadpool(self.spaces.hub.git(repo).entry, sha, app_file) is None:
            raise HubError(503, f"this Space has no {app_file} yet: upload one")
        app = await run_in_threadpool(self.ensure_app, repo, sha)
        if app.state != "RUNNING":
            raise HubError(503, f"the Space's app is not running ({app.state}): {app.error or 'starting'}")
        app.last_used = time.monotonic()
        return await self.spaces.proxy(app, request)

    def static_file(self, repo: Repo, sha: str, url_path: str):
        from starlette.responses import Response

        path = url_path.strip("/") or "index.html"
        if path.endswith("/"):
            path += "index.html"
        try:
            gitrepo.check_path(path)
        except gitrepo.BadPath as err:
            raise HubError(404, str(err)) from None
        git = self.spaces.hub.git(repo)
        e = git.entry(sha, path)
        if e is not None and e.kind == "directory":
            path, e = f"{path}/index.html", git.entry(sha, f"{path}/index.html")
        if e is None or e.kind != "file":
            raise HubError(404, f"{path} is not in this Space")
        from zupu.hub.viewer import ViewerError, file_bytes

        try:
            data = file_bytes(git, self.spaces.hub.storage, e, limit=None)
        except ViewerError as err:
            raise HubError(404, str(err)) from None
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        # same-origin referrers: a private Space's signed link (?__sign=) never leaves in a Referer header
        return Response(data, media_type=ctype, headers={"X-Content-Type-Options": "nosniff", "ETag": f'"{e.oid}"',
                                                         "Cache-Control": "no-cache", "Referrer-Policy": "same-origin"})


def _esc(text: str) -> str:
    from html import escape

    return escape(text)


class Spaces:
    """Every Space's listener, the signed links to private ones, and the gradio apps' lifecycle."""

    def __init__(self, hub: Hub, bind: str = "127.0.0.1", public_host: str = "localhost", run: bool = False,
                 idle: float = 900.0, start_timeout: float = 120.0, root: str | os.PathLike | None = None,
                 retry_after: float = 30.0):
        self.hub, self.bind, self.public_host, self.run = hub, bind, public_host, run
        self.idle, self.start_timeout, self.retry_after = idle, start_timeout, retry_after
        # The apps' folders live outside the hub's data folder, which the sandbox hides from them.
        # Made at the first app's start, mode 711: apps (user nobody, where that is the sandbox) pass through
        # to their own folder but cannot list the others.
        self.root = Path(root) if root else Path(tempfile.gettempdir()) / f"zupu-spaces-{uuid.uuid4().hex[:12]}"
        if self.root.resolve().is_relative_to(hub.data):
            raise HubError(500, f"the Spaces' folder {self.root} must be outside the hub's data folder {hub.data}")
        db_file = _sqlite_file(hub)
        self.hidden_files = [f"{db_file}{x}" for x in ("", "-wal", "-shm") if db_file and Path(f"{db_file}{x}").exists()
                             and not Path(db_file).resolve().is_relative_to(hub.data)]
        self._spaces: dict[int, Space] = {}
        self._guard = threading.Lock()
        self._ports_file = hub.data / "space-ports.json"
        self._ports: dict[str, int] = json.loads(self._ports_file.read_text()) if self._ports_file.exists() else {}
        self._reaper: threading.Thread | None = None  # started with the first app: a hub may never run one

    def space(self, repo: Repo) -> Space:
        with self._guard:
            sp = self._spaces.get(repo.id)
            if sp is None:
                sp = self._spaces[repo.id] = Space(self, repo.id, self._ports.get(str(repo.id), 0))
                if self._ports.get(str(repo.id)) != sp.port:  # a Space keeps its address across restarts
                    from zupu.atomic import write_bytes

                    self._ports[str(repo.id)] = sp.port
                    write_bytes(self._ports_file, json.dumps(self._ports).encode())
            return sp

    def forget(self, repo_id: int) -> None:
        """A deleted Space: its app stopped, its listener closed, its port given up."""
        with self._guard:
            sp = self._spaces.pop(repo_id, None)
            if self._ports.pop(str(repo_id), None) is not None:
                from zupu.atomic import write_bytes

                write_bytes(self._ports_file, json.dumps(self._ports).encode())
        if sp is not None:
            with sp.lock:
                sp.close()

    def host(self, repo: Repo) -> str:
        return f"http://{self.public_host}:{self.space(repo).port}"

    def sign(self, repo_id: int) -> str:
        exp = int(time.time()) + SIGN_TTL
        mac = hmac.new(self.hub.secret, f"space/{repo_id}/{exp}".encode(), hashlib.sha256).hexdigest()[:40]
        return f"{exp}.{mac}"

    def check(self, repo_id: int, token: str) -> bool:
        exp, _, mac = token.partition(".")
        if not exp.isdigit() or int(exp) < time.time():
            return False
        good = hmac.new(self.hub.secret, f"space/{repo_id}/{exp}".encode(), hashlib.sha256).hexdigest()[:40]
        return hmac.compare_digest(good, mac)

    def started_app(self) -> None:
        with self._guard:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, daemon=True, name="spaces-reaper")
                self._reaper.start()

    def _reap(self) -> None:
        while True:
            time.sleep(min(5.0, max(self.idle / 4, 0.2)))
            for sp in list(self._spaces.values()):
                app = sp.app
                if app is not None and app.proc is not None and app.proc.poll() is None and \
                        time.monotonic() - app.last_used > self.idle:
                    with sp.lock:
                        sp.stop()
                        with contextlib.suppress(OSError), app.log.open("a") as log:
                            log.write(f"[hub] stopped after {self.idle:.0f} s idle\n")
                        sp.app = None if sp.app is app else sp.app

    def close(self) -> None:
        for sp in list(self._spaces.values()):
            sp.close()

    async def proxy(self, app: App, request):
        """Forward `request` to the app, streaming the answer (gradio's queue answers with server-sent events)."""
        import httpx
        from starlette.background import BackgroundTask
        from starlette.responses import StreamingResponse

        loop = asyncio.get_running_loop()
        client = _clients.get(loop)
        if client is None:
            client = _clients[loop] = httpx.AsyncClient(timeout=httpx.Timeout(60.0, read=None))
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_PROXY_BODY:
            raise HubError(413, f"request bodies to a Space are limited to {MAX_PROXY_BODY} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_PROXY_BODY:
                raise HubError(413, f"request bodies to a Space are limited to {MAX_PROXY_BODY} bytes")
        headers = [(k, v) for k, v in request.headers.items()
                   if k.lower() not in HOP_HEADERS and k.lower() not in ("authorization", "cookie",
                                                                         "x-hf-authorization")]
        cookies = "; ".join(f"{k}={v}" for k, v in request.cookies.items()
                            if k not in (SPACE_COOKIE, "zupu_token"))  # the hub's and the link's stay here
        if cookies:
            headers.append(("cookie", cookies))
        headers += [("host", request.headers.get("host", "")), ("x-forwarded-proto", request.url.scheme)]
        url = f"http://127.0.0.1:{app.port}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
        try:
            upstream = await client.send(client.build_request(request.method, url, headers=headers,
                                                              content=bytes(body)), stream=True)
        except httpx.HTTPError as e:
            raise HubError(502, f"the Space's app did not answer: {type(e).__name__}") from None
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        out_headers.setdefault("referrer-policy", "same-origin")

        async def chunks():
            async for chunk in upstream.aiter_raw():
                app.last_used = time.monotonic()
                yield chunk

        return StreamingResponse(chunks(), status_code=upstream.status_code, headers=out_headers,
                                 background=BackgroundTask(upstream.aclose))


_clients: dict[Any, Any] = {}  # event loop -> httpx client: each listener's thread has a loop of its own


def _sqlite_file(hub: Hub) -> str | None:
    url = str(hub.sessions.kw["bind"].url) if hasattr(hub.sessions, "kw") else ""
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
