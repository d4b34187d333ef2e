"""Typed reads of what clients send (JSON fields, query parameters): a wrong type is a 400 that names the field,
never a 500 from deep inside a handler, nor a silent coercion (`"private": "false"` is not false)."""

from __future__ import annotations

from typing import Any

from zupu.hub.db import HubError

_NAMES = {str: "a string", bool: "true or false", int: "an integer", list: "a list", dict: "an object"}


def field(body: dict[str, Any], name: str, kind: type, default: Any = None, where: str = "the request") -> Any:
    """`body[name]` if it is a `kind` (bool is not an int here), `default` if absent or null, else HubError 400."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HubError(400, f"{name} in {where} must be {_NAMES.get(kind, kind.__name__)}, "
                            f"not {type(value).__name__} {str(value)[:40]!r}")
    return value


def objects(body: dict[str, Any], name: str, where: str = "the request") -> list[dict[str, Any]]:
    """`body[name]` as a list of JSON objects ([] if absent)."""
    items = field(body, name, list, [], where)
    if not all(isinstance(x, dict) for x in items):
        raise HubError(400, f"{name} in {where} must be a list of objects")
    return items


def text(value: str, name: str) -> str:
    """A string that goes into a commit or a header: no NUL (git cannot store it in a message)."""
    if "\x00" in value:
        raise HubError(400, f"{name} holds a NUL character")
    return value


def query_int(params, name: str, default: int = 0) -> int:
    """A non-negative integer query parameter (`?limit=20`); 400 for `?limit=abc`."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise HubError(400, f"?{name}={raw[:40]} is not a non-negative integer")
    return int(raw)
