"""The hub against the real `huggingface_hub` client, on a live server on 127.0.0.1.

`huggingface_hub` >= 1.x uploads through Xet whenever `hf_xet` is installed; the hub speaks Git LFS,
so these tests (like any user of the hub) switch Xet off: HF_HUB_DISABLE_XET=1.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hub_live import LiveHub
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from zupu.cli import main


@pytest.fixture(autouse=True)
def _no_xet(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="module")
def alice(live):
    return HfApi(endpoint=live.url, token=live.token("alice"))


def download(live, token, tmp_path, repo, name, **kw) -> bytes:
    return Path(hf_hub_download(repo, name, endpoint=live.url, token=token, cache_dir=tmp_path / "cache", **kw)
                ).read_bytes()


def test_token_command_contract(tmp_path, capsys):
    data = str(tmp_path / "d")
    assert main(["hub", "token", "create", "--data", data, "--user", "bob", "--scope", "read"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("zupu_") and " " not in token
    server = LiveHub(tmp_path / "d")
    try:
        who = HfApi(endpoint=server.url, token=token).whoami()
        assert who["name"] == "bob" and who["auth"]["accessToken"]["role"] == "read"
        assert main(["hub", "token", "list", "--data", data]) == 0
        listing = capsys.readouterr().out
        assert "bob" in listing and "read" in listing and "active" in listing
        tid = listing.split()[0]
        assert main(["hub", "token", "revoke", "--data", data, "--id", tid]) == 0
        capsys.readouterr()
        with pytest.raises(HfHubHTTPError) as e:
            HfApi(endpoint=server.url, token=token).whoami()
        assert e.value.response.status_code == 401
    finally:
        server.stop()


def test_upload_and_download_small_and_lfs_files(live, alice, tmp_path):
    url = alice.create_repo("alice/tiny")
    assert str(url).endswith("/alice/tiny")
    assert alice.create_repo("alice/tiny", exist_ok=True).repo_id == "alice/tiny"
    with pytest.raises(HfHubHTTPError) as e:
        alice.create_repo("alice/tiny")
    assert e.value.response.status_code == 409

    small = b'{"hidden_size": 32}\n'
    weights = os.urandom(200_000)  # *.safetensors goes to LFS
    big_text = (b"0123456789abcdef" * 65_536 * 11)[: 11 << 20]  # over 10 MiB: LFS by size
    alice.upload_file(path_or_fileobj=small, path_in_repo="config.json", repo_id="alice/tiny")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "sub" / "big.txt").write_bytes(big_text)
    (folder / "sub" / "notes.md").write_text("# notes\n")
    info = alice.upload_folder(repo_id="alice/tiny", folder_path=folder, commit_message="weights")
    assert len(info.oid) == 40

    files = alice.list_repo_files("alice/tiny")
    assert sorted(files) == [".gitattributes", "config.json", "model.safetensors", "sub/big.txt", "sub/notes.md"]
    meta = {s.rfilename: s for s in alice.model_info("alice/tiny", files_metadata=True).siblings}
    assert meta["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert meta["sub/big.txt"].lfs.size == len(big_text) and meta["config.json"].lfs is None

    token = alice.token
    assert download(live, token, tmp_path, "alice/tiny", "config.json") == small
    assert download(live, token, tmp_path, "alice/tiny", "model.safetensors") == weights
    assert download(live, token, tmp_path, "alice/tiny", "sub/big.txt") == big_text

    snap = snapshot_download("alice/tiny", endpoint=live.url, token=token, cache_dir=tmp_path / "snap",
                             allow_patterns=["*.json", "sub/*.md"])
    got = sorted(str(p.relative_to(snap)) for p in Path(snap).rglob("*") if p.is_file())
    assert got == ["config.json", "sub/notes.md"]

    assert alice.file_exists("alice/tiny", "sub/notes.md")
    assert not alice.file_exists("alice/tiny", "sub/missing.md")
    with pytest.raises(EntryNotFoundError):
        download(live, token, tmp_path, "alice/tiny", "nope.txt")
    with pytest.raises(RevisionNotFoundError):
        download(live, token, tmp_path, "alice/tiny", "config.json", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        download(live, token, tmp_path, "alice/none", "config.json")

    # Unchanged files are skipped by the client: the hub reports their oids in preupload.
    again = alice.upload_folder(repo_id="alice/tiny", folder_path=folder)
    assert again.oid == info.oid


def test_commit_with_deletes_and_stale_parent(live, alice):
    alice.create_repo("alice/ops")
    c1 = alice.create_commit("alice/ops", [CommitOperationAdd("a/x.txt", b"x"), CommitOperationAdd("a/y.txt", b"y"),
                                           CommitOperationAdd("keep.txt", b"k")], commit_message="three")
    c2 = alice.create_commit("alice/ops", [CommitOperationDelete("a/"), CommitOperationDelete("keep.txt")],
                             commit_message="deletes", parent_commit=c1.oid)
    assert sorted(alice.list_repo_files("alice/ops")) == [".gitattributes"]
    with pytest.raises(HfHubHTTPError) as e:
        alice.create_commit("alice/ops", [CommitOperationAdd("late.txt", b"late")], commit_message="stale",
                            parent_commit=c1.oid)
    assert e.value.response.status_code == 412
    assert alice.list_repo_commits("alice/ops")[0].commit_id == c2.oid
    with pytest.raises(EntryNotFoundError):
        alice.delete_file("never-there.txt", "alice/ops")


def test_branches_tags_and_revisions(live, alice, tmp_path):
    alice.create_repo("alice/refs")
    alice.upload_file(path_or_fileobj=b"v1", path_in_repo="v.txt", repo_id="alice/refs")
    alice.create_branch("alice/refs", branch="dev")
    alice.create_branch("alice/refs", branch="dev", exist_ok=True)
    alice.upload_file(path_or_fileobj=b"v2", path_in_repo="v.txt", repo_id="alice/refs", revision="dev")
    alice.create_tag("alice/refs", tag="v1.0", tag_message="first")
    alice.create_tag("alice/refs", tag="dev-light", revision="dev")
    refs = alice.list_repo_refs("alice/refs")
    assert {b.name for b in refs.branches} == {"main", "dev"}
    assert {t.name for t in refs.tags} == {"v1.0", "dev-light"}
    tok = alice.token
    assert download(live, tok, tmp_path, "alice/refs", "v.txt", revision="dev") == b"v2"
    assert download(live, tok, tmp_path, "alice/refs", "v.txt", revision="v1.0") == b"v1"
    dev_head = next(b.target_commit for b in refs.branches if b.name == "dev")
    assert download(live, tok, tmp_path, "alice/refs", "v.txt", revision=dev_head) == b"v2"
    assert alice.model_info("alice/refs", revision="dev-light").sha == dev_head
    alice.delete_tag("alice/refs", tag="dev-light")
    alice.delete_branch("alice/refs", branch="dev")
    assert [b.name for b in alice.list_repo_refs("alice/refs").branches] == ["main"]
    with pytest.raises(RevisionNotFoundError):
        alice.model_info("alice/refs", revision="dev")


def test_private_repos_and_tokens(live, alice, tmp_path):
    bob = HfApi(endpoint=live.url, token=live.token("bob"))
    reader = HfApi(endpoint=live.url, token=live.token("alice", "read"))
    anon = HfApi(endpoint=live.url, token=False)
    alice.create_repo("alice/secret", private=True)
    alice.upload_file(path_or_fileobj=b"s", path_in_repo="s.txt", repo_id="alice/secret")
    for other in (bob, anon):
        with pytest.raises(RepositoryNotFoundError):
            other.model_info("alice/secret")
        with pytest.raises(RepositoryNotFoundError):
            download(live, other.token, tmp_path, "alice/secret", "s.txt")
        assert "alice/secret" not in [m.id for m in other.list_models(author="alice")]
    assert "alice/secret" in [m.id for m in alice.list_models(author="alice")]
    assert reader.model_info("alice/secret").private
    with pytest.raises(HfHubHTTPError) as e:
        reader.upload_file(path_or_fileobj=b"no", path_in_repo="no.txt", repo_id="alice/secret")
    assert e.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as e:
        bob.create_repo("alice/not-yours")
    assert e.value.response.status_code == 403
    alice.update_repo_settings("alice/secret", private=False)
    assert not bob.model_info("alice/secret").private


def test_datasets_spaces_orgs_move_delete(live, alice, tmp_path):
    live.org("lab", "alice")
    alice.create_repo("lab/data", repo_type="dataset")
    alice.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv", repo_id="lab/data",
                      repo_type="dataset")
    path = hf_hub_download("lab/data", "train.csv", repo_type="dataset", endpoint=live.url, token=alice.token,
                           cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    assert [d.id for d in alice.list_datasets(author="lab")] == ["lab/data"]
    alice.create_repo("alice/app", repo_type="space", space_sdk="static")
    alice.upload_file(path_or_fileobj=b"<h1>hi</h1>", path_in_repo="index.html", repo_id="alice/app",
                      repo_type="space")
    assert "index.html" in alice.list_repo_files("alice/app", repo_type="space")
    alice.move_repo("lab/data", "lab/data2", repo_type="dataset")
    assert alice.list_repo_files("lab/data2", repo_type="dataset") == [".gitattributes", "train.csv"]
    with pytest.raises(RepositoryNotFoundError):
        alice.dataset_info("lab/data")
    alice.delete_repo("lab/data2", repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        alice.dataset_info("lab/data2")
    alice.delete_repo("lab/data2", repo_type="dataset", missing_ok=True)


def test_tree_paging_paths_info_and_commits(live, alice):
    live.hub.page_size = 3
    try:
        alice.create_repo("alice/many")
        ops = [CommitOperationAdd(f"d/f{i:02d}.txt", str(i).encode()) for i in range(8)]
        alice.create_commit("alice/many", ops, commit_message="eight")
        tree = list(alice.list_repo_tree("alice/many", recursive=True))
        assert sorted(t.path for t in tree) == [".gitattributes", "d", *sorted(f"d/f{i:02d}.txt" for i in range(8))]
        top = list(alice.list_repo_tree("alice/many", path_in_repo="d", expand=True))
        assert len(top) == 8 and top[0].last_commit.title == "eight"
        info = alice.get_paths_info("alice/many", ["d/f03.txt", "d", "missing.txt"])
        assert sorted(type(i).__name__ for i in info) == ["RepoFile", "RepoFolder"]
        for i in range(4):
            alice.upload_file(path_or_fileobj=b"%d" % i, path_in_repo="c.txt", repo_id="alice/many")
        assert len(alice.list_repo_commits("alice/many")) == 6
    finally:
        live.hub.page_size = 1000


def test_resolve_headers_and_range(live, alice):
    alice.create_repo("alice/ranges")
    blob = os.urandom(5000)
    alice.upload_file(path_or_fileobj=blob, path_in_repo="w.bin", repo_id="alice/ranges")
    tok = alice.token
    status, h, _ = live.request("HEAD", "/alice/ranges/resolve/main/w.bin", token=tok)
    sha = hashlib.sha256(blob).hexdigest()
    assert status == 200 and h["x-linked-etag"] == f'"{sha}"' and h["x-linked-size"] == "5000"
    assert h["x-repo-commit"] == alice.model_info("alice/ranges").sha
    status, h, body = live.request("GET", "/alice/ranges/resolve/main/w.bin", token=tok,
                                   headers={"Range": "bytes=1000-1999"})
    assert status == 206 and body == blob[1000:2000] and h["content-range"] == "bytes 1000-1999/5000"
    status, _, body = live.request("GET", "/alice/ranges/resolve/main/w.bin", headers={"Range": "bytes=-10"})
    assert status == 206 and body == blob[-10:]
    status, h, _ = live.request("GET", "/alice/ranges/resolve/main/absent.bin")
    assert status == 404 and h["x-error-code"] == "EntryNotFound" and "x-repo-commit" in h
    assert live.request("GET", "/alice/ranges/resolve/nope/w.bin")[1]["x-error-code"] == "RevisionNotFound"
    assert live.request("GET", "/alice/nothing/resolve/main/w.bin")[1]["x-error-code"] == "RepoNotFound"


def test_validate_yaml(live):
    ok = live.request("POST", "/api/validate-yaml", {"content": "---\nlicense: mit\n---\n# card", "repoType": "model"})
    assert ok[0] == 200 and json.loads(ok[2])["errors"] == []
    bad = live.request("POST", "/api/validate-yaml", {"content": "---\nlicense: [mit\n---\n", "repoType": "model"})
    assert bad[0] == 400


def test_multipart_lfs_upload(live, alice, tmp_path, monkeypatch):
    parts = []
    store_part = live.hub.storage.put_part

    async def counting(oid, upload, n, length, chunks):
        parts.append((n, length))
        return await store_part(oid, upload, n, length, chunks)

    monkeypatch.setattr(live.hub.storage, "put_part", counting)
    live.hub.multipart_chunk = 64 << 10
    try:
        alice.create_repo("alice/parts")
        blob = os.urandom(200_000)  # 4 parts of at most 64 KiB
        alice.upload_file(path_or_fileobj=blob, path_in_repo="w.safetensors", repo_id="alice/parts")
    finally:
        live.hub.multipart_chunk = 64 << 20
    assert sorted(parts) == [(1, 65536), (2, 65536), (3, 65536), (4, 200_000 - 3 * 65536)]
    assert download(live, alice.token, tmp_path, "alice/parts", "w.safetensors") == blob
    assert list(live.hub.storage.tmp.iterdir()) == []
