"""Models through the hub: `zupu push` + `zupu.from_pretrained("org/name")`, and `transformers` via HF_ENDPOINT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, constants

import zupu
from zupu.checkpoint import save_model
from zupu.cli import main
from zupu.errors import ZupuError
from zupu.hub.client import without_xet


@pytest.fixture
def hub_env(live, monkeypatch, tmp_path):
    token = live.token("alice")
    monkeypatch.setenv("ZUPU_HUB_URL", live.url)
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return token


def test_zupu_push_and_from_pretrained(live, hub_env, tmp_path, capsys):
    torch.manual_seed(0)
    model = zupu.create("backprop-mlp", "tiny").eval()
    run = tmp_path / "run"
    save_model(model, run)
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    (run / "resume.safetensors").write_bytes(b"optimizer state stays home")

    assert main(["push", str(run), "alice/mlp", "--private"]) == 0
    assert "/alice/mlp/commit/" in capsys.readouterr().out.strip().splitlines()[-1]
    files = HfApi(endpoint=live.url, token=hub_env).list_repo_files("alice/mlp")
    assert sorted(files) == [".gitattributes", "config.json", "metrics.json", "model.safetensors"]

    loaded = zupu.from_pretrained("alice/mlp")
    x = torch.randn(4, model.config.sizes[0])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))

    with pytest.raises(ZupuError, match="not found|RepoNotFound|404"):
        zupu.from_pretrained("alice/no-such-model")


def test_transformers_from_pretrained_through_hf_endpoint(live, hub_env, tmp_path):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "[PAD]", "the", "family", "tree", "of", "neural", "networks", "runs", "on", "a", "hub"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(words), n_positions=32, n_embd=32, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(config).eval()
    folder = tmp_path / "gpt"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    api = HfApi(endpoint=live.url, token=hub_env)
    api.create_repo("alice/tiny-gpt", private=True)
    with without_xet():
        api.upload_folder(repo_id="alice/tiny-gpt", folder_path=folder)
    text = "the family tree of neural networks runs on a hub"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = model(ids).logits

    # A fresh process that knows only HF_ENDPOINT and HF_TOKEN, as a user's script would.
    out = tmp_path / "logits.pt"
    script = textwrap.dedent(f"""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained("alice/tiny-gpt")
        model = AutoModelForCausalLM.from_pretrained("alice/tiny-gpt").eval()
        ids = tok({text!r}, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            torch.save({{"ids": ids, "logits": model(ids).logits,
                        "generated": model.generate(ids[:, :3], max_new_tokens=5, do_sample=False)}}, {str(out)!r})
    """)
    env = {**os.environ, "HF_ENDPOINT": live.url, "HF_TOKEN": hub_env, "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out)
    assert torch.equal(got["ids"], ids)
    torch.testing.assert_close(got["logits"], want, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(got["generated"], model.generate(ids[:, :3], max_new_tokens=5, do_sample=False))
    assert Path(tmp_path / "hf-home").exists()
