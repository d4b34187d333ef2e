"""Bounds on the work one request can make the hub do, and on what its logs keep.

- Headers: a header block over `MAX_HEADER_BYTES` or `MAX_HEADERS` lines gets 431. uvicorn's
  httptools protocol has no cap of its own (a 100 MiB header is buffered whole), so the hub runs it
  through `BoundedHttpTools`, which answers 431 and closes the connection once an unfinished header
  block passes `HEADER_BUFFER` (h11, the fallback without httptools, is capped by its own setting).
- Bodies: each endpoint has a ceiling (`body_limit`); a Content-Length over it gets 413 before a byte
  of the body is read, and a body without one (chunked) is counted while it streams in, 413 once it
  passes the ceiling. So memory per request stays bounded whatever a client announces.
- YAML front matter: parsed without aliases (the "billion laughs" expansion), at most `YAML_DEPTH`
  levels deep and `YAML_LIMIT` characters long (PyYAML's pure-Python parser, the one that can refuse
  aliases, reads about 35-150 kB/s here).
- The access log: paths without their query strings, LFS transfer links without their signatures.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import yaml

from zupu.hub.db import HubError

MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 << 10  # names and values of all headers together
HEADER_BUFFER = 1 << 20  # what uvicorn's h11 holds of a header block still arriving
SMALL_BODY = 8 << 20  # JSON API calls, forms, the LFS batch API
FETCH_BODY = 64 << 20  # a git fetch's wants and haves (anonymous for public repos, so not a push's limit)
YAML_DEPTH = 20
YAML_LIMIT = 100_000  # characters

_COMMIT = re.compile(r"^/api/(models|datasets|spaces)/[^/]+/[^/]+/commit(/|$)")
_PUSH = re.compile(r"/git-receive-pack$")
_FETCH = re.compile(r"/git-upload-pack$")
_LFS_TRANSFER = re.compile(r"^/lfs/(upload|part)/")


def body_limit(path: str, max_commit_bytes: int, max_object_size: int) -> int:
    """The most bytes a request body to `path` may hold."""
    if _LFS_TRANSFER.match(path):
        return max_object_size  # the handler also checks the exact size the link was signed for
    if _COMMIT.match(path) or _PUSH.search(path):
        return max_commit_bytes
    return FETCH_BODY if _FETCH.search(path) else SMALL_BODY


class Bounds:
    """ASGI middleware: 431 for oversized header blocks, 413 for bodies over their endpoint's limit.

    `refuse(status, message)` makes the error response (the hub's JSON error shape). A body that turns
    out too long while streaming raises HubError(413) from `receive`, inside the app, whose handler
    answers it like any other refusal.
    """

    def __init__(self, app, limit: Callable[[str], int], refuse: Callable[[int, str], Any]):
        self.app, self.limit, self.refuse = app, limit, refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope["headers"]
        if len(headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
            return await self.refuse(431, f"send at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes "
                                          "in all")(scope, receive, send)
        limit = self.limit(scope["path"])
        declared = next((v for k, v in headers if k == b"content-length"), None)
        if declared is not None:
            if not declared.isdigit():
                return await self.refuse(400, "Content-Length is not a number")(scope, receive, send)
            if int(declared) > limit:
                return await self.refuse(413, f"a request body to {scope['path']} may hold at most {limit} "
                                              f"bytes; this one announces {int(declared)}")(scope, receive, send)
        seen = 0

        async def bounded():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HubError(413, f"a request body to {scope['path']} may hold at most {limit} bytes")
            return message

        return await self.app(scope, bounded, send)


# --- YAML --------------------------------------------------------------------------------------------------
class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and nesting deeper than YAML_DEPTH (both are composed recursively)."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here",
                                              self.peek_event().start_mark)
        if self.depth >= YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {YAML_DEPTH} levels",
                                              self.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


@functools.lru_cache(maxsize=64)  # a card's front matter is parsed once, however often it is viewed
def load_yaml(text: str) -> Any:
    """`yaml.safe_load` without aliases, deep nesting or more than YAML_LIMIT characters; yaml.YAMLError for
    each. The result is cached and shared: do not modify it."""
    if len(text) > YAML_LIMIT:
        raise yaml.YAMLError(f"{len(text)} characters of YAML is over the {YAML_LIMIT} this hub parses")
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# --- the access log ------------------------------------------------------------------------------------------
_SIGNED = re.compile(r"^(/lfs/(?:upload|part/\d+|complete|verify|download)/\d+/[0-9a-f]+/\d+/\d+/)[0-9a-f]+")


def log_path(path: str) -> str:
    """A request target as the access log keeps it: no query string, no LFS link signature."""
    return _SIGNED.sub(r"\1<signature>", path.split("?", 1)[0])


class _AccessLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn.access records: (client address, method, path with query, HTTP version, status)
        if isinstance(record.args, tuple) and len(record.args) == 5:
            args = list(record.args)
            args[2] = log_path(str(args[2]))
            record.args = tuple(args)
        return True


def quiet_access_log() -> None:
    """Strip query strings and signatures from uvicorn's access log (once per process)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _AccessLogFilter) for f in logger.filters):
        logger.addFilter(_AccessLogFilter())


def _bounded_httptools():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpTools(HttpToolsProtocol):
        """uvicorn's httptools protocol, refusing (431, then closing) a header block over HEADER_BUFFER bytes."""

        _in_head, _head_bytes = True, 0

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes = True, 0

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                # Counted after parsing, so a chunk that ends the headers (and carries body) is never refused.
                self._head_bytes += len(data)
                if self._head_bytes > HEADER_BUFFER:
                    message = f"the request's headers ran past {HEADER_BUFFER} bytes".encode()
                    self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: "
                                         b"text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: "
                                         + str(len(message)).encode() + b"\r\n\r\n" + message)
                    self.transport.close()

    return BoundedHttpTools


def server_options() -> dict[str, Any]:
    """uvicorn settings the hub's header bounds rely on: httptools (as fast as uvicorn gets) with a capped
    header buffer, else h11 with its cap."""
    try:
        return {"http": _bounded_httptools()}
    except ImportError:
        return {"http": "h11", "h11_max_incomplete_event_size": HEADER_BUFFER}
