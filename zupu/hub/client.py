"""Talk to a zupu hub with the real `huggingface_hub` client: `snapshot(repo_id)` and `push(run, repo)`.

Where the hub is and who you are come from the environment: `ZUPU_HUB_URL` (or `HF_ENDPOINT`) and
`ZUPU_HUB_TOKEN` (or `HF_TOKEN`). The hub stores large files with Git LFS, not Xet, so uploads here
run with Xet switched off (what `HF_HUB_DISABLE_XET=1` does for any other `huggingface_hub` user).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path

from zupu.errors import ZupuError

# What a run directory holds that a hub repo should not: the resume state (optimizer, RNG).
RUN_IGNORE = ["resume.safetensors", ".*"]


class HubUnavailable(ZupuError):
    """No hub configured, or the hub refused or could not be reached."""


def endpoint() -> str:
    url = os.environ.get("ZUPU_HUB_URL") or os.environ.get("HF_ENDPOINT")
    if not url:
        raise HubUnavailable("no hub configured: set ZUPU_HUB_URL (or HF_ENDPOINT) to the hub's address, "
                             "e.g. http://127.0.0.1:8080 for `zupu hub serve`")
    return url.rstrip("/")


def token() -> str | None:
    return os.environ.get("ZUPU_HUB_TOKEN") or os.environ.get("HF_TOKEN")


@contextlib.contextmanager
def without_xet() -> Iterator[None]:
    from huggingface_hub import constants

    saved = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = saved


def _hub_errors():
    from huggingface_hub.errors import HfHubHTTPError

    return HfHubHTTPError


def snapshot(repo_id: str, revision: str | None = None) -> Path:
    """Download (or reuse from the HF cache) every file of model repo `repo_id`; its local folder."""
    from huggingface_hub import snapshot_download

    try:
        with without_xet():
            return Path(snapshot_download(repo_id, revision=revision, endpoint=endpoint(), token=token()))
    except _hub_errors() as e:
        raise HubUnavailable(f"{repo_id} on {endpoint()}: {e}") from None


def push(run: str | os.PathLike, repo_id: str, private: bool = False, message: str | None = None,
         space: bool = False) -> str:
    """Create `repo_id` if needed and upload run directory `run` to it; the commit's URL. With `space`, the
    repo is a gradio Space: the run plus a demo app for it (zupu/hub/demo.py)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    run = Path(run)
    if not (run / "config.json").is_file():
        raise ZupuError(f"{run} is not a run directory (no config.json); train one with `zupu train`")
    extra, kind = [], {}
    if space:
        from zupu.hub import demo

        what, app = demo.app_for(run)
        extra = [CommitOperationAdd("app.py", app.encode()),
                 CommitOperationAdd("README.md", demo.card(repo_id.split("/")[-1], what, run).encode())]
        kind = {"repo_type": "space"}
    api = HfApi(endpoint=endpoint(), token=token())
    try:
        with without_xet():
            api.create_repo(repo_id, private=private, exist_ok=True, **({"space_sdk": "gradio"} if space else {}),
                            **kind)
            ops = [CommitOperationAdd(p.relative_to(run).as_posix(), str(p)) for p in sorted(run.rglob("*"))
                   if p.is_file() and not any(fnmatch.fnmatch(p.relative_to(run).as_posix(), pat) or
                                              fnmatch.fnmatch(p.name, pat) for pat in RUN_IGNORE)]
            info = api.create_commit(repo_id, ops + extra, commit_message=message or f"zupu push {run.name}", **kind)
    except _hub_errors() as e:
        raise HubUnavailable(f"pushing {run} to {repo_id} on {endpoint()}: {e}") from None
    return info.commit_url
