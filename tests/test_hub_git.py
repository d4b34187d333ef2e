"""git and git-lfs against the hub: clone/pull/push over smart HTTP, on the same repos the HTTP API writes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download

pytestmark = [
    pytest.mark.skipif(shutil.which("git") is None, reason="the git binary is not installed (apt-get install git)"),
    pytest.mark.skipif(subprocess.run(["git", "lfs", "version"], capture_output=True).returncode != 0
                       if shutil.which("git") else True,
                       reason="git-lfs is not installed (apt-get install git-lfs; .ci/hub-services.sh does)"),
]


@pytest.fixture(autouse=True)
def git_env(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.getbasetemp() / "git-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    if not (home / ".gitconfig").exists():
        for args in (["lfs", "install", "--skip-repo"], ["config", "--global", "user.name", "Git User"],
                     ["config", "--global", "user.email", "git@example.org"],
                     ["config", "--global", "init.defaultBranch", "main"],
                     ["config", "--global", "lfs.locksverify", "false"]):
            git(*args)


def git(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc


def remote(live, repo: str, token: str | None, dotgit: bool = True) -> str:
    auth = f"user:{token}@" if token else ""
    return f"http://{auth}127.0.0.1:{live.port}/{repo}{'.git' if dotgit else ''}"


def test_api_commit_shows_in_git_and_git_push_shows_in_api(live, tmp_path):
    token = live.token("alice")
    api = HfApi(endpoint=live.url, token=token)
    api.create_repo("alice/both")
    weights = os.urandom(50_000)
    api.create_commit("alice/both", [CommitOperationAdd("config.json", b"{}"),
                                     CommitOperationAdd("model.safetensors", weights)], commit_message="from api")

    for dotgit in (True, False):
        work = tmp_path / f"clone-{dotgit}"
        git("clone", "-q", remote(live, "alice/both", token, dotgit), str(work))
        assert (work / "model.safetensors").read_bytes() == weights  # smudged by git-lfs, not a pointer
        assert (work / "config.json").read_text() == "{}"

    work = tmp_path / "clone-True"
    api.upload_file(path_or_fileobj=b"later", path_in_repo="later.txt", repo_id="alice/both")
    git("pull", "-q", cwd=work)
    assert (work / "later.txt").read_bytes() == b"later"

    pushed = os.urandom(30_000)
    (work / "data").mkdir()
    (work / "data" / "pushed.bin").write_bytes(pushed)
    (work / "README.md").write_text("# pushed with git\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "push with git and git lfs", cwd=work)
    git("push", "-q", cwd=work)

    assert api.list_repo_commits("alice/both")[0].title == "push with git and git lfs"
    info = {s.rfilename: s for s in api.model_info("alice/both", files_metadata=True).siblings}
    assert info["data/pushed.bin"].lfs.sha256 == hashlib.sha256(pushed).hexdigest()
    got = hf_hub_download("alice/both", "data/pushed.bin", endpoint=live.url, token=token, cache_dir=tmp_path / "c")
    assert Path(got).read_bytes() == pushed
    assert api.model_info("alice/both").sha == git("rev-parse", "HEAD", cwd=work).stdout.strip()


def test_git_refuses_without_the_right_token(live, tmp_path):
    owner = live.token("carol")
    api = HfApi(endpoint=live.url, token=owner)
    api.create_repo("carol/private", private=True)
    api.create_repo("carol/public")
    # Private: no clone without a token, nor with another user's.
    assert git("clone", "-q", remote(live, "carol/private", None), str(tmp_path / "a"), check=False).returncode != 0
    other = live.token("mallory")
    assert git("clone", "-q", remote(live, "carol/private", other), str(tmp_path / "b"), check=False).returncode != 0
    git("clone", "-q", remote(live, "carol/private", owner), str(tmp_path / "c"))
    # Public: anyone clones, only a write token of the owner pushes.
    work = tmp_path / "d"
    git("clone", "-q", remote(live, "carol/public", None), str(work))
    (work / "x.txt").write_text("x")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "x", cwd=work)
    before = api.model_info("carol/public").sha
    for token in (None, other, live.token("carol", "read")):
        git("remote", "set-url", "origin", remote(live, "carol/public", token), cwd=work)
        assert git("push", "-q", cwd=work, check=False).returncode != 0
    assert api.model_info("carol/public").sha == before
    git("remote", "set-url", "origin", remote(live, "carol/public", owner), cwd=work)
    git("push", "-q", cwd=work)
    assert api.model_info("carol/public").sha != before
