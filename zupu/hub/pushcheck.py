"""The hub's pre-receive hook: refuse a `git push` that would poison a repo (stdlib only: git runs it as a script).

git itself checks pushed objects too (`receive.fsckObjects`, set by githttp.py): no `.`, `..`, `.git` in
any case or spelling, no `/` in an entry name. This hook adds the rules of the HTTP API's paths
(gitrepo.check_path), which fsck lets through: no backslash and no control character in a name. A
tree that breaks them could not be checked out on every system, and every later API commit on that
branch would fail, so the whole push is refused and names the path.

Branch policy (docs: zupu/hub/githttp.py): force-pushes are allowed, as on the Hugging Face Hub;
deleting `main` is refused, as in the HTTP API.
"""

from __future__ import annotations

import subprocess
import sys

ZERO = "0" * 40


def git(*args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], input=input, capture_output=True, check=True).stdout


def bad_name(name: bytes) -> str | None:
    """Why a tree entry name is refused, or None."""
    if name in (b"", b".", b"..") or name.lower() == b".git":
        return "is empty, '.', '..' or .git"
    if b"\\" in name:
        return "holds a backslash"
    if any(c < 32 or c == 127 for c in name):
        return "holds a control character"
    return None


def tree_entries(data: bytes):
    """(name, object id) of each entry of a raw tree object: `<mode> <name>\\0<20-byte id>` repeated."""
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        nul = data.index(b"\0", space)
        yield data[space + 1:nul], data[nul + 1:nul + 21].hex()
        pos = nul + 21


def check(updates: list[tuple[str, str, str]]) -> str | None:
    """The refusal for these ref updates (old, new, ref), or None to accept them."""
    for _old, new, ref in updates:
        if new == ZERO and ref == "refs/heads/main":
            return "the main branch cannot be deleted"
    news = [new for _old, new, _ref in updates if new != ZERO]
    if not news:
        return None
    # Objects this push brings (reachable from the new tips, not from any ref the repo had).
    listed = git("rev-list", "--objects", *news, "--not", "--all").decode("utf-8", "surrogateescape")
    oids = [line.split(" ", 1)[0] for line in listed.splitlines() if line]
    kinds = git("cat-file", "--batch-check", input="".join(f"{o}\n" for o in oids).encode()).decode().splitlines()
    trees = [k.split()[0] for k in kinds if k.split()[1:2] == ["tree"]]
    if not trees:
        return None
    out = git("cat-file", "--batch", input="".join(f"{t}\n" for t in trees).encode())
    pos = 0
    for tree in trees:
        nl = out.index(b"\n", pos)
        size = int(out[pos:nl].split()[2])
        for name, _oid in tree_entries(out[nl + 1:nl + 1 + size]):
            why = bad_name(name)
            if why:
                return f"tree {tree} has an entry {name.decode(errors='replace')!r} that {why}"
        pos = nl + 1 + size + 1
    return None


def main() -> int:
    updates = [tuple(line.split()) for line in sys.stdin.read().splitlines() if line.strip()]
    refusal = check(updates)  # type: ignore[arg-type]
    if refusal:
        print(f"zupu hub: push refused: {refusal}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
