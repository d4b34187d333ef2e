"""GPT: parity with `transformers` (GPT2LMHeadModel, OpenAIGPTLMHeadModel) on random-init checkpoints it
saved, both ways; cached = uncached generation; batched left-padded = one row at a time; GPT-3's banded
layers; sampling filters; checkpoint errors that name the keys."""

import json

import pytest
import torch
from reference import need, randomise_vectors

import zupu
from zupu import create
from zupu.checkpoint import load_model, save_model
from zupu.errors import CheckpointError, SettingError
from zupu.models.gpt import GPT, GPTConfig
from zupu.sampling import sample

transformers = need("transformers")

HF = {
    # an odd MLP width and 3 layers so that no shape is accidentally square
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=101, n_positions=48, n_embd=48, n_layer=3, n_head=4, n_inner=120, bos_token_id=None,
        eos_token_id=None)),
    "openai-gpt": lambda: transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(
        vocab_size=101, n_positions=48, n_embd=48, n_layer=3, n_head=4)),
}


@pytest.fixture(params=list(HF))
def hf_dir(request, tmp_path):
    torch.manual_seed(0)
    hf = randomise_vectors(HF[request.param]()).eval()  # LayerNorm gains/biases and linear biases not 1/0
    hf.save_pretrained(tmp_path / "hf")
    return request.param, hf, tmp_path / "hf"


def greedy_hf(hf, ids, n, attention_mask=None):
    out = hf.generate(ids, attention_mask=attention_mask if attention_mask is not None else torch.ones_like(ids),
                      max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)
    return out[:, ids.size(1):]


def greedy(model, ids, n, **kw):
    return torch.stack(list(model.generate(ids, n, temperature=0, **kw)), 1)  # (B, n)


def test_loads_what_transformers_saved(hf_dir):
    model_type, hf, path = hf_dir
    model = zupu.from_pretrained(path)
    assert isinstance(model, GPT) and model.config.pre_ln == (model_type == "gpt2")
    ids = torch.randint(0, 101, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (model(ids) - hf(ids).logits).abs().max().item()
    assert diff < 1e-6, diff  # an exact GELU where OpenAI-GPT's "gelu" is the tanh form differs by 4e-6 here
    prompt = ids[:2, :6]
    ours = greedy(model, prompt, 30)
    assert torch.equal(ours, greedy_hf(hf, prompt, 30))
    assert torch.equal(ours, greedy(model, prompt, 30, use_cache=False))


def test_transformers_loads_what_zupu_saved(hf_dir, tmp_path):
    model_type, _, path = hf_dir
    model = zupu.from_pretrained(path)
    save_model(model, tmp_path / "zupu", {"recipe": "test"})
    cls = {"gpt2": transformers.GPT2LMHeadModel, "openai-gpt": transformers.OpenAIGPTLMHeadModel}[model_type]
    hf = cls.from_pretrained(tmp_path / "zupu").eval()
    ids = torch.randint(0, 101, (2, 33), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() < 1e-6
    assert torch.equal(greedy(model, ids[:, :5], 20), greedy_hf(hf, ids[:, :5], 20))
    back = load_model(tmp_path / "zupu")  # and zupu reads its own HF folder back, bit for bit
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values(),
                                                  strict=True))
    assert json.loads((tmp_path / "zupu" / "config.json").read_text())["zupu"]["recipe"] == "test"


def test_openai_gpt_gelu_is_the_tanh_form_and_exact_gelu_keeps_zupus_layout(tmp_path):
    """OpenAI-GPT's afn "gelu" is transformers' gelu_new (tanh approximation); a post-LN zupu GPT with the exact
    GELU has no OpenAI-GPT twin, so it saves in zupu's own layout rather than as a checkpoint that lies."""
    from zupu.hf.gpt import model_type_of

    exact = GPTConfig(vocab_size=101, n_positions=48, n_embd=48, n_layer=1, n_head=4, pre_ln=False,
                      activation_function="gelu")
    assert model_type_of(exact) is None and model_type_of(create("gpt", "tiny-gpt1").config) == "openai-gpt"
    save_model(GPT(exact), tmp_path / "exact", {"recipe": "test"})
    assert "afn" not in json.loads((tmp_path / "exact" / "config.json").read_text())


def test_left_padded_batch_equals_rows_one_at_a_time(hf_dir):
    _, hf, path = hf_dir
    model = zupu.from_pretrained(path)
    rows = [torch.randint(1, 101, (n,), generator=torch.Generator().manual_seed(n)) for n in (3, 9, 6)]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
    batch = greedy(model, ids, 12, attention_mask=mask)
    for i, r in enumerate(rows):
        assert torch.equal(batch[i], greedy(model, r[None], 12)[0]), i
    assert torch.equal(batch, greedy(model, ids, 12, attention_mask=mask, use_cache=False))
    assert torch.equal(batch, greedy_hf(hf, ids, 12, attention_mask=mask))


@pytest.mark.parametrize("preset", ["tiny", "tiny-gpt1", "tiny-gpt3"])
def test_cached_equals_uncached_past_the_context_window(preset):
    torch.manual_seed(0)
    model = create("gpt", preset, n_positions=16).eval()
    ids = torch.randint(0, 96, (2, 5))
    cached = greedy(model, ids, 30)  # 35 tokens > 16 positions: the window slides after 11
    assert torch.equal(cached, greedy(model, ids, 30, use_cache=False))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    kw = dict(temperature=0.9, top_k=20, top_p=0.95)
    a = torch.stack(list(model.generate(ids, 20, generator=g1, **kw)), 1)
    b = torch.stack(list(model.generate(ids, 20, use_cache=False, generator=g2, **kw)), 1)
    assert torch.equal(a, b)


def test_gpt3_local_layers_see_only_their_band():
    torch.manual_seed(0)
    window = 4
    local = GPT(GPTConfig(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2, attention_types=("local",),
                          window_size=window, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)).eval()
    ids = torch.randint(0, 50, (1, 12))
    changed = ids.clone()
    changed[0, 2] = (ids[0, 2] + 1) % 50
    with torch.no_grad():
        diff = (local(ids) - local(changed)).abs().amax(-1)[0]  # (T,)
    assert (diff[2:2 + window] > 0).all()  # positions 2..5 see position 2
    assert (diff[2 + window:] == 0).all()  # position 6 onwards does not: a band of 4
    dense = GPT(GPTConfig(**{**local.config.__dict__, "attention_types": ("global",)})).eval()
    dense.load_state_dict(local.state_dict())
    with torch.no_grad():
        assert (dense(ids) - dense(changed)).abs().amax(-1)[0, -1] > 0


def test_gpt3_preset_saves_in_zupu_layout(tmp_path):
    model = create("gpt", "tiny-gpt3")
    assert [b.attn.window for b in model.h] == [None, 8]
    save_model(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert "model_type" not in cfg and cfg["attention_types"] == ["global", "local"]
    back = zupu.from_pretrained(tmp_path)
    assert back.config == model.config
    ids = torch.randint(0, 96, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(back(ids), model.eval()(ids), rtol=0, atol=0)


def test_presets_follow_the_papers():
    from zupu.models.gpt import PRESETS

    gpt2 = GPT(PRESETS["gpt2"])
    assert gpt2.num_params(non_embedding=False) == 124_439_808  # GPT-2 small as HF counts it
    assert gpt2.lm_head.weight is gpt2.wte.weight
    std = gpt2.h[0].mlp.proj.weight.std().item()
    assert abs(std - 0.02 / (2 * 12) ** 0.5) < 2e-4  # scaled residual init
    assert not PRESETS["gpt1"].pre_ln and PRESETS["gpt1"].n_positions == 512
    assert PRESETS["gpt3"].n_layer == 96 and PRESETS["gpt3-small"].n_positions == 2048


def test_sampling_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample(logits, temperature=0), torch.zeros(4000, dtype=torch.long))
    assert set(sample(logits, top_k=2, generator=g).tolist()) == {0, 1}
    assert set(sample(logits, top_p=0.7, generator=g).tolist()) == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3
    assert set(sample(logits, top_p=0.85, generator=g).tolist()) == {0, 1, 2}
    counts = torch.bincount(sample(logits, generator=g), minlength=4) / 4000
    torch.testing.assert_close(counts, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03, rtol=0)
    cold = torch.bincount(sample(logits, temperature=0.25, generator=g), minlength=4) / 4000
    assert cold[0] > 0.85  # p^(1/T): 0.5^4 / (0.5^4 + 0.3^4 + ...) = 0.88
    with pytest.raises(SettingError, match="top_p"):
        sample(logits, top_p=1.5)


def test_generation_stops_at_eos():
    torch.manual_seed(0)
    model = create("gpt", "tiny").eval()
    ids = torch.randint(0, 96, (3, 4))
    free = greedy(model, ids, 10)
    eos = int(free[0, 2])  # row 0 emits this token at step 3
    out = greedy(model, ids, 10, eos_token_id=eos)
    row0 = out[0].tolist()
    assert row0[:3] == free[0, :3].tolist() and set(row0[2:]) == {eos}
    assert out.size(1) <= 10


def test_bad_checkpoints_name_the_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    HF["gpt2"]().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    state["transformer.h.9.mlp.c_fc.weight"] = state.pop("transformer.h.1.mlp.c_fc.weight")
    state["transformer.ln_f.weight"] = torch.ones(7)
    save_file(state, weights)
    with pytest.raises(CheckpointError) as e:
        zupu.from_pretrained(tmp_path)
    msg = str(e.value)
    assert "missing keys ['transformer.h.1.mlp.c_fc.weight']" in msg
    assert "unexpected keys ['transformer.h.9.mlp.c_fc.weight']" in msg
    assert "transformer.ln_f.weight: checkpoint (7,) vs model (48,)" in msg
    weights.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        zupu.from_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "n_head": 5}))
    with pytest.raises(CheckpointError, match="not a valid gpt2 config: n_embd 48 is not divisible by n_head 5"):
        zupu.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "add_cross_attention": True}))
    with pytest.raises(CheckpointError, match="add_cross_attention"):
        zupu.from_pretrained(tmp_path)


def test_context_window_and_prompt_errors():
    model = create("gpt", "tiny").eval()
    with pytest.raises(SettingError, match="context window"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(SettingError, match="at least one token"):
        next(model.generate(torch.zeros(1, 0, dtype=torch.long), 3))
    with pytest.raises(SettingError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)


def test_reads_the_original_gpt2_upload_layout(tmp_path):
    """OpenAI's GPT-2 on the HF hub: pytorch_model.bin, keys without "transformer.", mask buffers."""
    torch.manual_seed(0)
    hf = HF["gpt2"]().eval()
    hf.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(3):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 48, 48).tril()
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "pytorch_model.bin")
    ids = torch.randint(0, 101, (2, 30))
    with torch.no_grad():
        assert (zupu.from_pretrained(tmp_path)(ids) - hf(ids).logits).abs().max().item() < 1e-5
