"""A live zupu hub on 127.0.0.1 (a free port) for tests, and raw-HTTP helpers for what clients never send."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from zupu.hub import db
from zupu.hub.limits import server_options
from zupu.hub.server import Hub, create_app


def at_once(fn, n: int = 4, seconds: float = 60) -> list:
    """Call `fn` in `n` threads released together; what each returned or raised, in the order they finished.
    Fails if one is still running after `seconds`: it hung."""
    results: list[object] = []
    start = threading.Barrier(n)

    def run() -> None:
        start.wait()
        try:
            results.append(fn())
        except Exception as e:  # noqa: BLE001 - the caller's assertion shows what failed
            results.append(e)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"{fn.__name__} hung"
    return results


class LiveHub:
    def __init__(self, data: Path, **hub_options):
        self.hub = Hub(data, **hub_options)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.hub), log_level="warning", lifespan="off",
                                                   **server_options()))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test hub did not start")
            time.sleep(0.02)

    def token(self, user: str, scope: str = "write") -> str:
        with self.hub.sessions() as s, s.begin():
            return db.create_token(s, user, scope)[1]

    def org(self, name: str, *members: str) -> None:
        with self.hub.sessions() as s, s.begin():
            org = db.get_or_create_user(s, name, is_org=True)
            for m in members:
                s.add(db.Membership(org_id=org.id, user_id=db.get_or_create_user(s, m).id))

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def request(self, method: str, path: str, body: bytes | dict | None = None, token: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP request to the hub (path may be a full URL); (status, headers, body)."""
        if path.startswith("http"):
            parts = urlsplit(path)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
        hdrs = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()
