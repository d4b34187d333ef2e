"""An older `huggingface_hub` (0.36.x, in its own venv) against the hub, with Xet left on: it falls back to LFS.

The venv is built by .ci/hub-services.sh at build/hf-0.36 (CI runs it before the tests).
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from hub_live import LiveHub

OLD = Path(__file__).resolve().parents[1] / "build" / "hf-0.36" / "bin" / "python"

pytestmark = pytest.mark.skipif(not OLD.exists(), reason=f"{OLD} is missing: run .ci/hub-services.sh to build it")


def test_huggingface_hub_0_36_round_trip(tmp_path):
    live = LiveHub(tmp_path / "hub")
    try:
        token = live.token("old")
        script = textwrap.dedent("""
            import os, hashlib, pathlib, huggingface_hub as h
            from huggingface_hub import HfApi, CommitOperationAdd, CommitOperationDelete
            assert h.__version__.startswith("0.36."), h.__version__
            api = HfApi()
            api.create_repo("old/model")
            api.create_repo("old/model", exist_ok=True)
            blob = os.urandom(100_000)
            api.upload_file(path_or_fileobj=blob, path_in_repo="w.bin", repo_id="old/model")
            folder = pathlib.Path(os.environ["WORK"]) / "f"
            (folder / "sub").mkdir(parents=True)
            (folder / "config.json").write_text("{}")
            (folder / "sub" / "a.txt").write_text("a")
            api.upload_folder(repo_id="old/model", folder_path=folder)
            api.create_commit("old/model", [CommitOperationDelete("sub/")], commit_message="rm sub")
            assert sorted(api.list_repo_files("old/model")) == [".gitattributes", "config.json", "w.bin"]
            info = {s.rfilename: s for s in api.model_info("old/model", files_metadata=True).siblings}
            assert info["w.bin"].lfs.sha256 == hashlib.sha256(blob).hexdigest()
            assert pathlib.Path(h.hf_hub_download("old/model", "w.bin")).read_bytes() == blob
            snap = pathlib.Path(h.snapshot_download("old/model", allow_patterns=["*.json"],
                                                    cache_dir=os.environ["WORK"] + "/snap"))
            assert sorted(p.name for p in snap.iterdir()) == ["config.json"]
            print("OK")
        """)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=live.url, HF_TOKEN=token, HF_HOME=str(tmp_path / "hf-home"), WORK=str(tmp_path),
                   HF_HUB_DISABLE_TELEMETRY="1")
        proc = subprocess.run([str(OLD), "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-3000:]
    finally:
        live.stop()
