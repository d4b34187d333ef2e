"""The real `datasets` library against a live zupu hub: parquet, csv, jsonl and imagefolder repos, configs and
splits from the card's YAML, `split=`, `revision=`, a private repo with a token, streaming, `push_to_hub`.

`datasets` reads `HF_ENDPOINT` when huggingface_hub is imported, so the endpoint is patched into the constants
of both libraries for the module (what a user gets by exporting HF_ENDPOINT before Python starts).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, constants

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def hub(live, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(constants, "HF_HUB_DISABLE_XET", True)
    mp.setattr(constants, "ENDPOINT", live.url)
    mp.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", live.url + "/{repo_id}/resolve/{revision}/{filename}")
    import datasets.config

    mp.setattr(datasets.config, "HF_ENDPOINT", live.url)
    mp.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hfhub")))
    mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hfds"))
    token = live.token("dana")
    mp.setenv("HF_TOKEN", token)
    yield HfApi(endpoint=live.url, token=token), token
    mp.undo()


def parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_parquet_csv_jsonl_with_configs_splits_and_revisions(hub):
    import pyarrow as pa

    api, _ = hub
    api.create_repo("dana/mix", repo_type="dataset")
    card = ("---\nconfigs:\n- config_name: numbers\n  data_files:\n"
            "  - split: train\n    path: numbers/train.parquet\n  - split: test\n    path: numbers/test.parquet\n"
            "- config_name: squares\n  data_files: numbers/train.parquet\n---\n# mix\n")
    squares = pa.table({"x": list(range(10)), "y": [i * i for i in range(10)]})
    api.create_commit("dana/mix", [
        CommitOperationAdd("README.md", card.encode()),
        CommitOperationAdd("numbers/train.parquet", parquet_bytes(squares)),
        CommitOperationAdd("numbers/test.parquet", parquet_bytes(pa.table({"x": [100, 101], "y": [0, 1]}))),
    ], repo_type="dataset", commit_message="data")
    # One format a repo: `datasets` picks one builder for a repo's data files (so does huggingface.co).
    api.create_repo("dana/words", repo_type="dataset")
    api.create_commit("dana/words", [CommitOperationAdd("train/a.csv", b"word,n\nalpha,1\nbeta,2\n"),
                                     CommitOperationAdd("train/b.csv", b"word,n\ngamma,3\n")],
                      repo_type="dataset", commit_message="csv")
    api.create_repo("dana/lines", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"".join(json.dumps({"t": f"line {i}"}).encode() + b"\n" for i in range(5)),
                    path_in_repo="lines.jsonl", repo_id="dana/lines", repo_type="dataset")
    ds = datasets.load_dataset("dana/mix", "numbers")
    assert set(ds) == {"train", "test"} and ds["train"]["y"][3] == 9 and ds["test"]["x"] == [100, 101]
    assert datasets.load_dataset("dana/mix", "squares", split="train").num_rows == 10
    assert datasets.get_dataset_config_names("dana/mix") == ["numbers", "squares"]
    words = datasets.load_dataset("dana/words", split="train")
    assert sorted(words["word"]) == ["alpha", "beta", "gamma"] and words.features["n"].dtype == "int64"
    assert datasets.load_dataset("dana/lines", split="train")["t"][4] == "line 4"
    old = api.list_repo_commits("dana/mix", repo_type="dataset")[0].commit_id
    api.create_commit("dana/mix", [CommitOperationAdd("numbers/test.parquet",
                                                      parquet_bytes(pa.table({"x": [7], "y": [49]})))],
                      repo_type="dataset", commit_message="new test split")
    assert datasets.load_dataset("dana/mix", "numbers", split="test")["x"] == [7]
    assert datasets.load_dataset("dana/mix", "numbers", split="test", revision=old)["x"] == [100, 101]
    streamed = datasets.load_dataset("dana/mix", "numbers", split="train", streaming=True)
    assert [r["x"] for r in streamed.take(3)] == [0, 1, 2]


def test_imagefolder_private_repo_with_token_and_push_to_hub(hub, live, tmp_path):
    from PIL import Image

    api, token = hub
    api.create_repo("dana/pics", repo_type="dataset", private=True)
    ops = []
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            label = "cat" if i % 2 == 0 else "dog"
            buf = io.BytesIO()
            Image.new("RGB", (8, 6), (40 * i, 100, 200)).save(buf, format="PNG")
            ops.append(CommitOperationAdd(f"{split}/{label}/{i}.png", buf.getvalue()))
    api.create_commit("dana/pics", ops, repo_type="dataset", commit_message="images")
    ds = datasets.load_dataset("dana/pics", token=token)
    assert ds["train"].num_rows == 3 and ds["test"].num_rows == 2
    assert ds["train"].features["label"].names == ["cat", "dog"] and ds["train"][0]["image"].size == (8, 6)
    with pytest.raises(Exception, match="(?i)not.*found|doesn't exist|cannot be found"):
        datasets.load_dataset("dana/pics", token=False, cache_dir=str(tmp_path / "anonymous"))

    pushed = datasets.Dataset.from_dict({"q": ["a", "b", "c"], "n": [1, 2, 3]})
    pushed.push_to_hub("dana/pushed", token=token)
    back = datasets.load_dataset("dana/pushed", split="train", download_mode="force_redownload")
    assert back["q"] == ["a", "b", "c"] and back["n"] == [1, 2, 3]

    # Images pushed by `datasets` (Parquet, an Image column) are thumbnails in the viewer.
    images = datasets.Dataset.from_dict({"image": [Image.new("RGB", (300, 200), (9, 99, 199))], "n": [7]})
    images.cast_column("image", datasets.Image()).push_to_hub("dana/pushed-images", token=token)
    r = json.loads(live.request("GET", "/api/datasets/dana/pushed-images/viewer?split=train")[2])
    assert [c["type"] for c in r["columns"]] == ["image", "int64"] and r["rows"][0][1] == "7"
    thumb = Image.open(io.BytesIO(base64.b64decode(r["rows"][0][0].removeprefix("data:image/png;base64,"))))
    assert thumb.size == (64, 43) and thumb.getpixel((5, 5))[:3] == (9, 99, 199)


def test_zupu_data_push_and_load_from_the_hub(hub, live, monkeypatch, tmp_path):
    import zupu.data
    from zupu.cli import main
    from zupu.errors import ChecksumError

    api, token = hub
    monkeypatch.setenv("ZUPU_HUB_URL", live.url)
    monkeypatch.setenv("ZUPU_HUB_TOKEN", token)
    monkeypatch.setenv("ZUPU_CACHE", str(tmp_path / "zcache"))  # filled from ZUPU_DATA_MIRROR, verified
    assert main(["data", "push", "tinyshakespeare", "dana/shakespeare"]) == 0
    card = api.hf_hub_download("dana/shakespeare", "README.md", repo_type="dataset", cache_dir=tmp_path / "c")
    text = Path(card).read_text(encoding="utf-8")
    d = zupu.data.get("tinyshakespeare")
    assert "zupu_dataset: tinyshakespeare" in text and "license_name: public domain" in text and d.homepage in text
    assert d.files[0].sha256 in text  # a plain file: the sha256 of its bytes is the registry's digest
    assert zupu.data.load("hub:dana/shakespeare") == zupu.data.load("tinyshakespeare")
    # A copy edited on the hub is refused, naming the dataset and the file.
    api.upload_file(path_or_fileobj=b"not Shakespeare\n", path_in_repo="tinyshakespeare/input.txt",
                    repo_id="dana/shakespeare", repo_type="dataset")
    with pytest.raises(ChecksumError, match="tinyshakespeare.*input.txt"):
        zupu.data.load("hub:dana/shakespeare")


def test_viewer_api_and_page_with_bad_input_and_privacy(hub, live):
    """Splits, schema and paged rows from the files; a broken parquet or card is a message, not a 500."""
    import pyarrow as pa

    api, token = hub
    api.create_repo("dana/view", repo_type="dataset")
    train = pa.table({"n": list(range(45)), "s": [f"<b>row {i}</b>" for i in range(45)]})
    api.create_commit("dana/view", [
        CommitOperationAdd("data/train.parquet", parquet_bytes(train)),
        CommitOperationAdd("data/test.parquet", b"PAR1 this is not parquet at all"),
        CommitOperationAdd("data/validation.csv", b"n,s\n1,one\n2,two\n"),
    ], repo_type="dataset", commit_message="data")
    status, _, body = live.request("GET", "/api/datasets/dana/view/viewer")
    listing = json.loads(body)
    assert status == 200 and [(s["config"], s["split"]) for s in listing["splits"]] == [
        ("default", "train"), ("default", "validation"), ("default", "test")]
    status, _, body = live.request("GET", "/api/datasets/dana/view/viewer/main?split=train&offset=40&length=10")
    r = json.loads(body)
    assert status == 200 and r["num_rows"] == 45 and [c["name"] for c in r["columns"]] == ["n", "s"]
    assert [row[0] for row in r["rows"]] == ["40", "41", "42", "43", "44"]
    assert live.request("GET", "/api/datasets/dana/view/viewer?split=train&offset=abc")[0] == 400
    assert live.request("GET", "/api/models/dana/view/viewer")[0] == 404
    status, headers, body = live.request("GET", "/api/datasets/dana/view/viewer?split=test")
    assert status == 422 and "data/test.parquet is not a Parquet file" in json.loads(body)["error"]
    status, _, html = live.request("GET", "/datasets/dana/view/viewer/main", headers={"Accept": "text/html"})
    page = html.decode()
    assert status == 200 and "data/test.parquet is not a Parquet file" in page and "two" in page
    assert "&lt;b&gt;row 0&lt;/b&gt;" in page and "<b>row" not in page  # cells are text, escaped
    status, _, html = live.request("GET", "/datasets/dana/view/viewer/main?config=default&split=train&p=2",
                                   headers={"Accept": "text/html"})
    assert status == 200 and "row 40" in html.decode() and "row 39" not in html.decode()
    # A card whose YAML does not parse: the viewer says so; files and the card page still work.
    bad_card = b"---\nconfigs: [unclosed\n---\n# x\n"
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):  # the client checks first, as on HF
        api.upload_file(path_or_fileobj=bad_card, path_in_repo="README.md", repo_id="dana/view", repo_type="dataset")
    line = {"key": "file", "value": {"path": "README.md", "content": base64.b64encode(bad_card).decode(),
                                     "encoding": "base64"}}
    status, _, _ = live.request("POST", "/api/datasets/dana/view/commit/main",
                                b'{"key": "header", "value": {"summary": "bad card"}}\n' + json.dumps(line).encode(),
                                token=token, headers={"Content-Type": "application/x-ndjson"})
    assert status == 200  # git and raw commits do not ask
    status, _, body = live.request("GET", "/api/datasets/dana/view/viewer")
    assert status == 422 and "README.md" in json.loads(body)["error"]
    status, _, html = live.request("GET", "/datasets/dana/view/viewer/main", headers={"Accept": "text/html"})
    assert status == 200 and "fix the card" in html.decode()
    assert live.request("GET", "/datasets/dana/view", headers={"Accept": "text/html"})[0] == 200
    assert live.request("GET", "/datasets/dana/view/resolve/main/data/validation.csv")[2] == b"n,s\n1,one\n2,two\n"
    # Private datasets: 404 to everyone else, rows to the owner.
    api.update_repo_settings("dana/view", private=True, repo_type="dataset")
    assert live.request("GET", "/api/datasets/dana/view/viewer?split=train")[0] == 404
    assert live.request("GET", "/datasets/dana/view/viewer/main", headers={"Accept": "text/html"})[0] == 404
    api.delete_file("README.md", repo_id="dana/view", repo_type="dataset")
    assert live.request("GET", "/api/datasets/dana/view/viewer?split=validation", token=token)[0] == 200
