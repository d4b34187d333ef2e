"""Bare git repositories driven through the git CLI: read trees and blobs, make commits.

Every repo on the hub is a bare repository. A commit made through the HTTP API is built in a
private temporary index (so concurrent commits never share one), written as objects, and only
then published by `git update-ref NEW OLD`, a compare-and-swap: a reader sees the old commit or
the new one, never half of one, and a branch that moved in between is never overwritten.

Large files live in the LFS store; the repo holds their pointer files (the Git LFS spec):

    version https://git-lfs.github.com/spec/v1
    oid sha256:<64 hex>
    size <bytes>
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zupu.errors import ZupuError

ZERO = "0" * 40
LFS_SPEC = "version https://git-lfs.github.com/spec/v1"
_POINTER = re.compile(rb"^version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize (\d+)\n$")
SHA1 = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MANY_BLOBS = 64  # a commit adding more files than this writes them as one pack (git fast-import)

# What a new repo starts with, like the Hugging Face Hub's default: these patterns go to LFS.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.gguf", "*.gz", "*.h5", "*.joblib",
                    "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl",
                    "*.pt", "*.pth", "*.safetensors", "*.tar", "*.tflite", "*.zip", "*.zst", "*tfevents*")
)


class GitError(ZupuError):
    """A git command failed (a corrupt repo, a missing git binary)."""


class BadPath(ZupuError):
    """A path in a repo that would escape it or touch git's own files."""


class StaleParent(ZupuError):
    """The branch moved since the commit the caller built on (HTTP 412)."""


class PathConflict(ZupuError):
    """A commit that would put a file where a folder is, or a folder where a file is (HTTP 409)."""


class MissingEntry(ZupuError):
    """A commit that deletes a file or folder the branch does not have (HTTP 404)."""


class NothingToCommit(ZupuError):
    """A commit that changes no file (HTTP 400)."""


class UnknownRevision(ZupuError):
    """A branch, tag or commit the repo does not have."""


def check_path(path: str) -> str:
    """A file path inside a repo, or BadPath: no `..`, no absolute path, no `.git/`, no NUL, no `\\`."""
    if not isinstance(path, str) or not path or len(path) > 4096:
        raise BadPath(f"path {path!r} must be a non-empty string of at most 4096 characters")
    if "\x00" in path or "\\" in path or any(ord(c) < 32 for c in path):
        raise BadPath(f"path {path!r} holds a NUL, a control character or a backslash")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise BadPath(f"path {path!r} is absolute; give it relative to the repo root")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadPath(f"path {path!r} has an empty, '.' or '..' component")
    if any(p.lower() == ".git" for p in parts):
        raise BadPath(f"path {path!r} reaches into .git, which the hub keeps to itself")
    return path


def iso(when: dt.datetime) -> str:
    """The Hub's date format: `2024-05-01T12:00:00.000Z` (UTC, milliseconds)."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"{LFS_SPEC}\noid sha256:{oid}\nsize {size}\n".encode()


def parse_pointer(data: bytes) -> tuple[str, int] | None:
    m = _POINTER.match(data) if len(data) < 1024 else None
    return (m.group(1).decode(), int(m.group(2))) if m else None


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str  # "file" or "directory"
    oid: str  # git object id (blob or tree)
    size: int  # blob size in git (the pointer's size for an LFS file)
    lfs: tuple[str, int] | None = None  # (sha256, size) of the real content


@dataclass(frozen=True)
class CommitInfo:
    oid: str
    title: str
    message: str
    author: str
    date: str  # ISO 8601, UTC, as iso() writes it
    parents: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """One operation of a commit: add a blob (`data`), an LFS pointer (`lfs`), or delete (`delete`).

    `oid`: the blob once written (Repo.store), so the slow part of a commit happens before its lock."""

    path: str
    data: bytes | None = None
    lfs: tuple[str, int] | None = None
    delete: bool = False
    folder: bool = False
    oid: str | None = None


class Repo:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # --- plumbing -------------------------------------------------------------------------------
    def git(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "GIT_DIR": str(self.path), "GIT_TERMINAL_PROMPT": "0",
                    "GIT_CONFIG_NOSYSTEM": "1", **(env or {})}
        try:
            proc = subprocess.run(["git", *args], input=input, env=full_env, capture_output=True, timeout=120)
        except FileNotFoundError:
            raise GitError("the git binary is not installed; the hub needs git (apt-get install git)") from None
        if check and proc.returncode != 0:
            raise GitError(f"git {' '.join(args[:3])} in {self.path}: {proc.stderr.decode(errors='replace').strip()}")
        return proc

    def init(self, branch: str = "main") -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "--bare", f"--initial-branch={branch}", str(self.path)],
                       check=True, capture_output=True)
        for key, value in (("http.receivepack", "true"), ("receive.denyNonFastForwards", "false"),
                           ("core.logAllRefUpdates", "false"), ("uploadpack.allowAnySHA1InWant", "true")):
            self.git("config", key, value)

    # --- refs -----------------------------------------------------------------------------------
    def refs(self) -> dict[str, str]:
        """Full ref name -> commit id, for branches and tags (tags peeled to their commit)."""
        out = self.git("for-each-ref", "--format=%(refname) %(objectname) %(*objectname)",
                       "refs/heads", "refs/tags").stdout.decode()
        refs = {}
        for line in out.splitlines():
            name, oid, peeled = (line.split(" ") + [""])[:3]
            refs[name] = peeled or oid
        return refs

    def resolve(self, revision: str) -> str | None:
        """Branch, tag, full ref or commit id -> commit id; None if the repo does not have it."""
        refs = self.refs()
        for name in (revision, f"refs/heads/{revision}", f"refs/tags/{revision}"):
            if name in refs:
                return refs[name]
        if SHA1.match(revision):
            proc = self.git("cat-file", "-t", revision, check=False)
            if proc.returncode == 0 and proc.stdout.strip() == b"commit":
                return revision
        return None

    def must_resolve(self, revision: str) -> str:
        oid = self.resolve(revision)
        if oid is None:
            raise UnknownRevision(f"revision {revision!r} is not a branch, tag or commit of this repo")
        return oid

    def update_ref(self, ref: str, new: str, old: str | None) -> bool:
        """Compare-and-swap: point `ref` at `new` only if it is still `old` (None: must not exist)."""
        return self.git("update-ref", ref, new, old or ZERO, check=False).returncode == 0

    def delete_ref(self, ref: str) -> None:
        self.git("update-ref", "-d", ref)

    def create_tag(self, tag: str, commit: str, message: str | None, author: tuple[str, str]) -> None:
        if message:
            env = {"GIT_COMMITTER_NAME": author[0], "GIT_COMMITTER_EMAIL": author[1]}
            self.git("tag", "-a", tag, commit, "-m", message, env=env)
        elif not self.update_ref(f"refs/tags/{tag}", commit, None):
            raise GitError(f"tag {tag!r} already exists")

    # --- reading --------------------------------------------------------------------------------
    def ls(self, commit: str, path: str = "", recursive: bool = False) -> list[Entry]:
        """Entries of directory `path` at `commit` (all files below it when recursive)."""
        spec = [f"{commit}:{path}"] if path else [commit]
        args = ["ls-tree", "-l", "-z", *(["-r", "-t"] if recursive else []), *spec]
        proc = self.git(*args, check=False)
        if proc.returncode != 0:
            return []
        entries = []
        for line in proc.stdout.decode().split("\0"):
            if not line:
                continue
            meta, name = line.split("\t", 1)
            mode, kind, oid, size = meta.split()
            full = f"{path}/{name}" if path else name
            if kind == "tree":
                entries.append(Entry(full, "directory", oid, 0))
            elif kind == "blob":
                entries.append(Entry(full, "file", oid, int(size)))
        return self._with_lfs(entries)

    def entry(self, commit: str, path: str) -> Entry | None:
        """The file or directory at `path` in `commit`, or None."""
        proc = self.git("ls-tree", "-l", "-z", commit, "--", path, check=False)
        for line in proc.stdout.decode().split("\0"):
            if line:
                meta, name = line.split("\t", 1)
                mode, kind, oid, size = meta.split()
                if name == path:
                    e = Entry(path, "directory" if kind == "tree" else "file", oid, 0 if kind == "tree" else int(size))
                    return self._with_lfs([e])[0]
        return None

    def file(self, commit: str, path: str) -> tuple[Entry, bytes] | None:
        """The file at `path` in `commit` (LFS pointer parsed) with its bytes, from one git call; None if no file
        is there. For serving a file: `entry` then `blob` take two or three calls, each a process to start."""
        out = self.git("cat-file", "--batch", input=f"{commit}:{path}\n".encode()).stdout
        header, _, rest = out.partition(b"\n")
        fields = header.split()
        if len(fields) != 3 or fields[1] != b"blob":  # "<name> missing", or a directory
            return None
        data = rest[:int(fields[2])]
        return Entry(path, "file", fields[0].decode(), len(data), parse_pointer(data)), data

    def _with_lfs(self, entries: list[Entry]) -> list[Entry]:
        small = [e for e in entries if e.kind == "file" and e.size < 1024]
        if not small:
            return entries
        blobs = dict(zip([e.oid for e in small], self.cat_many([e.oid for e in small]), strict=True))
        return [Entry(e.path, e.kind, e.oid, e.size, parse_pointer(blobs[e.oid])) if e.oid in blobs else e
                for e in entries]

    def cat_many(self, oids: list[str]) -> list[bytes]:
        out = self.git("cat-file", "--batch", input="".join(f"{o}\n" for o in oids).encode()).stdout
        blobs, pos = [], 0
        for _ in oids:
            nl = out.index(b"\n", pos)
            header = out[pos:nl].split()
            size = int(header[2])
            blobs.append(out[nl + 1: nl + 1 + size])
            pos = nl + 1 + size + 1
        return blobs

    def blob(self, oid: str) -> bytes:
        return self.git("cat-file", "blob", oid).stdout

    def log(self, commit: str, limit: int = 100, skip: int = 0, path: str | None = None) -> list[CommitInfo]:
        sep, end = "\x1f", "\x1e"
        fmt = sep.join(["%H", "%s", "%B", "%an", "%at", "%P"]) + end
        args = ["log", f"--format={fmt}", f"--max-count={limit}", f"--skip={skip}", commit]
        proc = self.git(*args, *(["--", path] if path else []), check=False)
        commits = []
        for rec in proc.stdout.decode(errors="replace").split(end):
            rec = rec.strip("\n")
            if rec:
                oid, title, body, author, date, parents = rec.split(sep)
                when = dt.datetime.fromtimestamp(int(date), dt.timezone.utc)
                commits.append(CommitInfo(oid, title, body.strip(), author, iso(when), tuple(parents.split())))
        return commits

    def count_commits(self, commit: str) -> int:
        return int(self.git("rev-list", "--count", commit).stdout)

    def last_commit_for(self, commit: str, path: str) -> CommitInfo | None:
        found = self.log(commit, limit=1, path=path)
        return found[0] if found else None

    def lfs_oids(self) -> Iterator[tuple[str, int]]:
        """Every LFS object any commit of this repo points at (used after a git push)."""
        objs = self.git("rev-list", "--objects", "--all").stdout.decode().split("\n")
        oids = [line.split(" ", 1)[0] for line in objs if line]
        if not oids:
            return
        check = self.git("cat-file", "--batch-check", input="".join(f"{o}\n" for o in oids).encode()).stdout
        small = [p[0] for p in (ln.split() for ln in check.decode().splitlines()) if len(p) == 3
                 and p[1] == "blob" and int(p[2]) < 1024]
        for data in self.cat_many(small) if small else []:
            ptr = parse_pointer(data)
            if ptr:
                yield ptr

    # --- writing --------------------------------------------------------------------------------
    def store(self, changes: Iterable[Change]) -> list[Change]:
        """`changes` with their blobs written to the object store, all in one git call. Objects are
        content-addressed, so this needs no lock: a blob no commit ends up using is only garbage."""
        changes = list(changes)
        todo = [i for i, ch in enumerate(changes) if not ch.delete and ch.oid is None]
        if not todo:
            return changes
        blobs = [lfs_pointer(*changes[i].lfs) if changes[i].lfs else changes[i].data or b"" for i in todo]
        with tempfile.TemporaryDirectory(prefix="zupu-blobs-") as tmp:
            if len(blobs) <= MANY_BLOBS:
                files = [Path(tmp) / str(n) for n in range(len(blobs))]
                for f, data in zip(files, blobs, strict=True):
                    f.write_bytes(data)
                out = self.git("hash-object", "-w", "--no-filters", "--stdin-paths",
                               input="".join(f"{f}\n" for f in files).encode()).stdout.decode().split()
            else:  # one pack, not thousands of loose object files (3,000 of those took 11 s here)
                marks = Path(tmp) / "marks"
                stream = b"".join(b"blob\nmark :%d\ndata %d\n%s\n" % (n + 1, len(d), d) for n, d in enumerate(blobs))
                self.git("fast-import", "--quiet", f"--export-marks={marks}", input=stream)
                by_mark = dict(line.split() for line in marks.read_text().splitlines())
                out = [by_mark[f":{n + 1}"] for n in range(len(blobs))]
        for i, oid in zip(todo, out, strict=True):
            changes[i] = dataclasses.replace(changes[i], oid=oid)
        return changes

    def commit(self, branch: str, changes: Iterable[Change], message: str, author: tuple[str, str],
               parent_commit: str | None = None) -> str:
        """Apply `changes` on top of `branch` and move it by compare-and-swap; returns the new commit.

        `parent_commit`: the commit the caller built on; if the branch is elsewhere, StaleParent.
        A file where a folder is (or the reverse) is PathConflict, never a silent replacement;
        deleting what is not there, MissingEntry; a commit that changes nothing, NothingToCommit.
        """
        ref = f"refs/heads/{branch}"
        head = self.refs().get(ref)
        if parent_commit is not None and parent_commit != head:
            raise StaleParent(f"branch {branch!r} is at {head}, not at the parent commit {parent_commit}")
        changes = self.store(changes)
        with tempfile.TemporaryDirectory(prefix="zupu-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if head:
                self.git("read-tree", head, env=env)
            # surrogateescape: a pushed name that is not UTF-8 goes back to git byte for byte
            listed = self.git("ls-files", "-z", env=env).stdout.decode("utf-8", "surrogateescape").split("\0")
            lines = _index_lines([p for p in listed if p], changes)
            if lines:
                self.git("update-index", "-z", "--index-info", env=env,
                         input="".join(f"{ln}\0" for ln in lines).encode("utf-8", "surrogateescape"))
            tree = self.git("write-tree", env=env).stdout.decode().strip()
        if head and tree == self.git("rev-parse", f"{head}^{{tree}}").stdout.decode().strip():
            raise NothingToCommit(f"this commit changes no file on {branch!r}; nothing was committed")
        ident = {"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1],
                 "GIT_COMMITTER_NAME": author[0], "GIT_COMMITTER_EMAIL": author[1]}
        parents = ["-p", head] if head else []
        new = self.git("commit-tree", tree, *parents, "-m", message, env=ident).stdout.decode().strip()
        if not self.update_ref(ref, new, head):
            raise StaleParent(f"branch {branch!r} moved while this commit was being made; build on its new head")
        return new


def _index_lines(listed: list[str], changes: list[Change]) -> list[str]:
    """`git update-index --index-info` lines that apply `changes`, in order, to the files `listed`.

    Folders are counted (how many files lie below each), so a file added where a folder is, or below
    a file, is found in O(depth) per change and refused with the path named.
    """
    files = set(listed)
    below: dict[str, int] = {}
    lines: list[str] = []

    def count(path: str, step: int) -> None:
        parts = path.split("/")
        for k in range(1, len(parts)):
            folder = "/".join(parts[:k])
            below[folder] = below.get(folder, 0) + step

    for path in files:
        count(path, 1)
    for ch in changes:
        check_path(ch.path)
        if ch.delete:
            targets = [p for p in files if p.startswith(ch.path + "/")] if ch.folder else []
            targets += [ch.path] if ch.path in files else []
            if not targets:
                raise MissingEntry(f"A file with this name doesn't exist: {ch.path}")
            for p in targets:
                files.discard(p)
                count(p, -1)
                lines.append(f"0 {ZERO}\t{p}")
            continue
        if below.get(ch.path, 0) > 0:
            raise PathConflict(f"{ch.path} is a folder in this repo; delete the folder first to put a file there")
        parts = ch.path.split("/")
        for k in range(1, len(parts)):
            if "/".join(parts[:k]) in files:
                raise PathConflict(f"{'/'.join(parts[:k])} is a file in this repo, so {ch.path} cannot be "
                                   "put under it; delete the file first")
        if ch.path not in files:
            files.add(ch.path)
            count(ch.path, 1)
        lines.append(f"100644 {ch.oid}\t{ch.path}")
    return lines
