"""Registry datasets on a hub: `push(name, "org/name")` publishes one as a dataset repo with a card, and
`load("hub:org/name")` (zupu.data.load) reads it back, checked against the registry's pinned hashes.

The repo holds the dataset's files at their registry paths ("<dataset folder>/<file>", as in the cache and
the mirror) and a README.md whose YAML front matter names the registry dataset, its licence, its source and
every file's sha256. Reading back trusts neither the hub nor the card: each file must match the registry's
pinned digest, exactly as a download from the dataset's canonical address must.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from zupu.data.download import RemoteFile, manifest_digest, verify
from zupu.data.registry import Dataset, get
from zupu.errors import ChecksumError, ZupuError

PREFIX = "hub:"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def card(d: Dataset, paths: dict[str, Path]) -> str:
    """README.md for dataset `d` whose verified local files are `paths` (keys as Dataset.fetch gives them)."""
    files = []
    for f in d.files:
        local = paths[f.path.split("/", 1)[1]]
        if isinstance(f, RemoteFile):
            files.append({"path": f.path, "sha256": _sha256(local), "source": f.url})
        else:  # a folder: the registry pins the digest of its manifest (names and their sha256)
            files.append({"path": f.path + "/", "manifest_sha256": f.sha256, "source": f.url})
    meta = {"license": "other", "license_name": d.licence, "source": d.homepage, "zupu_dataset": d.name,
            "files": files}
    rows = "\n".join(f"| `{f['path']}` | `{f.get('sha256') or f['manifest_sha256']}` | {f['source']} |"
                     for f in files)
    return (f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n\n# {d.name}\n\n{d.summary}\n\n"
            f"- licence: {d.licence}\n- source: {d.homepage}\n- registry: `zupu.data.load({d.name!r})`; from this "
            f"repo: `zupu.data.load(\"hub:ORG/NAME\")`\n\n| file | sha256 | from |\n|---|---|---|\n{rows}\n")


def push(name: str, repo_id: str, private: bool = False) -> str:
    """Publish registry dataset `name` (fetched and verified first) to dataset repo `repo_id`; the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from zupu.data.download import cache_dir
    from zupu.hub.client import HubUnavailable, _hub_errors, endpoint, token, without_xet

    d = get(name)
    if not d.files:
        raise ZupuError(f"dataset {name!r} has no files to publish: it ships with its library "
                        "(load it with zupu.data.load)")
    paths = d.fetch()
    root = cache_dir() / "data"
    ops = [CommitOperationAdd("README.md", card(d, paths).encode())]
    for f in d.files:
        local = paths[f.path.split("/", 1)[1]]
        for p in sorted(local.rglob("*")) if local.is_dir() else [local]:
            if p.is_file():
                ops.append(CommitOperationAdd(p.relative_to(root).as_posix(), str(p)))
    api = HfApi(endpoint=endpoint(), token=token())
    try:
        with without_xet():
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            info = api.create_commit(repo_id, ops, repo_type="dataset", commit_message=f"zupu data push {name}")
    except _hub_errors() as e:
        raise HubUnavailable(f"pushing dataset {name} to {repo_id} on {endpoint()}: {e}") from None
    return info.commit_url


def load(address: str, revision: str | None = None, **kwargs: Any) -> Any:
    """`hub:org/name` -> the registry dataset that repo holds, loaded by its registry loader."""
    from huggingface_hub import snapshot_download

    from zupu.hub.client import HubUnavailable, _hub_errors, endpoint, token, without_xet

    repo_id = address.removeprefix(PREFIX)
    try:
        with without_xet():
            folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, endpoint=endpoint(),
                                            token=token()))
    except _hub_errors() as e:
        raise HubUnavailable(f"dataset {repo_id} on {endpoint()}: {e}") from None
    readme = folder / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    _, front, _ = text.split("---\n", 2) if text.startswith("---\n") and text.count("---\n") >= 2 else ("", "", "")
    meta = yaml.safe_load(front) if front else None
    if not isinstance(meta, dict) or not isinstance(meta.get("zupu_dataset"), str):
        raise ZupuError(f"{repo_id} is not a zupu dataset repo: its README.md front matter has no zupu_dataset "
                        "(publish one with `zupu data push NAME ORG/NAME`)")
    d = get(meta["zupu_dataset"])
    source = f"{endpoint()}/datasets/{repo_id}"
    paths: dict[str, Path] = {}
    for f in d.files:
        local, key = folder / f.path, f.path.split("/", 1)[1]
        if not local.exists():
            raise ChecksumError(d.name, f.path, f.sha256, "missing", source,
                                fix=f"{repo_id} lacks the file; push the dataset again")
        if isinstance(f, RemoteFile):
            verify(local, f, d.name, source, fix=f"the copy on {repo_id} is not the registry's; push it again")
        else:
            got = manifest_digest(local, f.names(paths[f.listing]))
            if got != f.sha256:
                raise ChecksumError(d.name, f.path, f.sha256, got or "incomplete", source)
        paths[key] = local
    return d.loader(paths, **kwargs)
