"""No silent loss, no poisoned repos (issue 22), with the real clients: huggingface_hub, git and git lfs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
from test_hub_git import git, git_env, pytestmark, remote  # noqa: F401 - the git fixtures and skips

from zupu.hub import gitattributes


@pytest.fixture(scope="module")
def token(live):
    return live.token("alice")


@pytest.fixture(scope="module")
def api(live, token):
    return HfApi(endpoint=live.url, token=token)


def files_of(api, repo) -> set[str]:
    return set(api.list_repo_files(repo))


def test_a_file_where_a_folder_is_and_the_reverse_are_refused_naming_the_path(api):
    api.create_repo("alice/conflicts")
    api.create_commit("alice/conflicts", [CommitOperationAdd("sub/a.txt", b"a"), CommitOperationAdd("sub/b.txt", b"b"),
                                          CommitOperationAdd("empty.txt", b"")], commit_message="start")
    before = files_of(api, "alice/conflicts")
    for path, named in (("sub", "sub is a folder"), ("empty.txt/x", "empty.txt is a file")):
        with pytest.raises(HfHubHTTPError) as e:
            api.create_commit("alice/conflicts", [CommitOperationAdd(path, b"data")], commit_message="clash")
        assert e.value.response.status_code == 409 and named in str(e.value), str(e.value)
    assert files_of(api, "alice/conflicts") == before
    # Deleting the folder first, in the same commit, is how a file takes its place.
    api.create_commit("alice/conflicts", [CommitOperationDelete("sub/"), CommitOperationAdd("sub", b"now a file")],
                      commit_message="replace")
    assert files_of(api, "alice/conflicts") == {".gitattributes", "empty.txt", "sub"}


NAMES = ["#hash.dat", "!bang.dat", "br[1].dat", "sp ace.dat", "st*ar.dat", "q?.dat", '"quote.dat', "dir/[x] y.dat",
         "back#mid!.dat"]


def test_gitattributes_patterns_are_escaped_as_git_lfs_does(live, api, tmp_path):
    assert [gitattributes.escape(n) for n in ("#a", "!b", "c[1]", "d e", "f*?", '"q', "m#!")] == \
        ["\\#a", "\\!b", "c\\[1\\]", "d[[:space:]]e", "f\\*\\?", '\\"q', "m\\#!"]
    api.create_repo("alice/names")
    contents = {name: b"\x00binary " + name.encode() + os.urandom(64) for name in NAMES}
    # br1.dat is what `br[1].dat` would match as a glob: it must stay a plain git file.
    api.create_commit("alice/names", [CommitOperationAdd(n, d) for n, d in contents.items()]
                      + [CommitOperationAdd("br1.dat", b"plain text")], commit_message="odd names")
    info = {s.rfilename: s for s in api.model_info("alice/names", files_metadata=True).siblings}
    assert all(info[n].lfs is not None for n in NAMES) and info["br1.dat"].lfs is None

    clone = tmp_path / "clone"
    git("clone", "-q", remote(live, "alice/names", None), str(clone))
    for name, data in contents.items():
        assert (clone / name).read_bytes() == data, f"{name}: git lfs checked out the pointer, not the content"
    attrs = git("check-attr", "filter", "--", "br1.dat", *NAMES, cwd=clone).stdout.splitlines()
    assert attrs[0] == "br1.dat: filter: unspecified" and all(a.endswith(": filter: lfs") for a in attrs[1:]), attrs
    # The hub reads the same file as git does: a second upload of these names is recognised as LFS-tracked.
    status, _, body = live.request("POST", "/api/models/alice/names/preupload/main", {"files": [
        {"path": n, "sample": "", "size": 3} for n in [*NAMES, "br1.dat"]]}, token=api.token)
    modes = {f["path"]: f["uploadMode"] for f in json.loads(body)["files"]}
    assert status == 200 and modes == {**dict.fromkeys(NAMES, "lfs"), "br1.dat": "regular"}


def _commit_with_entry(clone: Path, name: bytes) -> str:
    """A commit on top of HEAD whose tree holds a blob under `name`, made with plumbing that checks nothing."""
    blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], input=b"poison", cwd=clone, capture_output=True,
                          check=True).stdout.decode().strip()
    head_tree = git("rev-parse", "HEAD^{tree}", cwd=clone).stdout.strip()
    raw = subprocess.run(["git", "cat-file", "tree", head_tree], cwd=clone, capture_output=True, check=True).stdout
    tree = raw + b"100644 " + name + b"\0" + bytes.fromhex(blob)
    oid = subprocess.run(["git", "hash-object", "-w", "-t", "tree", "--literally", "--stdin"], input=tree, cwd=clone,
                         capture_output=True, check=True).stdout.decode().strip()
    return git("commit-tree", oid, "-p", "HEAD", "-m", f"poison {name!r}", cwd=clone).stdout.strip()


def test_pushes_of_poisoned_trees_are_refused(live, api, token, tmp_path):
    api.create_repo("alice/poison")
    api.upload_file(path_or_fileobj=b"ok", path_in_repo="ok.txt", repo_id="alice/poison")
    head = api.model_info("alice/poison").sha
    clone = tmp_path / "clone"
    git("clone", "-q", remote(live, "alice/poison", token), str(clone))
    for name in (b"..", b".", b".git", b".GiT", b"a\\b.txt", b"x\x01y"):
        commit = _commit_with_entry(clone, name)
        push = git("push", "origin", f"{commit}:refs/heads/main", cwd=clone, check=False)
        assert push.returncode != 0, (name, push.stderr)
        assert api.model_info("alice/poison").sha == head, name
    # The branch still takes commits from the API and from git.
    api.upload_file(path_or_fileobj=b"still fine", path_in_repo="after.txt", repo_id="alice/poison")
    git("pull", "-q", "origin", "main", cwd=clone)
    assert (clone / "after.txt").read_bytes() == b"still fine"


def test_force_push_policy(live, api, token, tmp_path):
    """Force-pushes are allowed (as on the HF Hub); the old commits stay readable by id; main cannot be deleted."""
    api.create_repo("alice/force")
    api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id="alice/force")
    old = api.model_info("alice/force").sha
    clone = tmp_path / "clone"
    git("clone", "-q", remote(live, "alice/force", token), str(clone))
    git("reset", "-q", "--hard", "HEAD~1", cwd=clone)
    (clone / "g.txt").write_text("rewritten")
    git("add", "g.txt", cwd=clone)
    git("commit", "-q", "-m", "rewrite", cwd=clone)
    assert git("push", "origin", "main", cwd=clone, check=False).returncode != 0  # not a fast-forward
    git("push", "-q", "--force", "origin", "main", cwd=clone)
    assert files_of(api, "alice/force") == {".gitattributes", "g.txt"}
    assert Path(hf_hub_download("alice/force", "f.txt", revision=old, endpoint=live.url, token=token,
                                cache_dir=tmp_path / "cache")).read_bytes() == b"v1"
    refused = git("push", "origin", ":main", cwd=clone, check=False)
    assert refused.returncode != 0 and "main branch cannot be deleted" in refused.stderr
    assert api.model_info("alice/force").sha == git("rev-parse", "HEAD", cwd=clone).stdout.strip()


def test_repo_ids_are_never_reused_and_links_stay_with_their_repo(live, api, token):
    api.create_repo("alice/gone")
    data = os.urandom(3000)
    oid = hashlib.sha256(data).hexdigest()
    status, _, body = live.request("POST", "/alice/gone.git/info/lfs/objects/batch", {
        "operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}, token=token,
        headers={"Accept": "application/vnd.git-lfs+json"})
    href = json.loads(body)["objects"][0]["actions"]["upload"]["href"]
    gone_id = json.loads(live.request("GET", "/api/models/alice/gone", token=token)[2])["_id"]
    api.delete_repo("alice/gone")
    api.create_repo("alice/new")
    api.create_repo("alice/gone")  # the same name again
    ids = {json.loads(live.request("GET", f"/api/models/alice/{n}", token=token)[2])["_id"] for n in ("new", "gone")}
    assert gone_id not in ids
    status, _, body = live.request("PUT", href, data)
    assert status == 404 and b"deleted" in body
    assert not live.hub.storage.exists(oid)
