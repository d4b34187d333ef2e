"""Which files of a commit git sends through the LFS filter, and the `.gitattributes` line that adds one.

A file's name becomes a pattern the way `git lfs track --filename` writes it (git-lfs
`escapeGlobCharacters`): `*`, `?`, `[`, `]`, `\\` and `#` are escaped with a backslash and a space
becomes `[[:space:]]` (a line is split at whitespace). Beyond git-lfs, a leading `!` (a negative
pattern, which git ignores in attributes) and a leading `"` (a C-quoted pattern) are escaped too, so
every name matches itself and nothing else. Whether a path is tracked is asked of git itself
(`git check-attr`), so the hub and a `git clone` never disagree about a pattern.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from zupu.hub import gitrepo

LFS_ATTRS = "filter=lfs diff=lfs merge=lfs -text"


def escape(path: str) -> str:
    """The `.gitattributes` pattern that matches exactly the file `path` (relative to the repo root)."""
    out = "".join("\\" + c if c in "\\*?[]#" else "[[:space:]]" if c == " " else c for c in path)
    return "\\" + out if out[:1] in ("!", '"') else out


def lfs_line(path: str) -> str:
    return f"{escape(path)} {LFS_ATTRS}\n"


def lfs_tracked(git: gitrepo.Repo, commit: str | None, paths: list[str]) -> set[str]:
    """Those of `paths` whose `filter` attribute is `lfs` under the `.gitattributes` files of `commit`."""
    if not paths or commit is None:
        return set()
    with tempfile.TemporaryDirectory(prefix="zupu-attr-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git.git("read-tree", commit, env=env)  # check-attr --cached reads the attributes files from an index
        out = git.git("check-attr", "--cached", "-z", "--stdin", "filter", env=env,
                      input="".join(f"{p}\0" for p in paths).encode()).stdout.decode()
    fields = out.split("\0")
    # -z output: path NUL attribute NUL value NUL, per path
    return {fields[i] for i in range(0, len(fields) - 2, 3) if fields[i + 2] == "lfs"}
