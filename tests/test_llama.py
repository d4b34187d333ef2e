"""Llama: the real SmolLM2-135M-Instruct GGUF against transformers' reading of the same file, and random-init
checkpoints both ways through transformers' LlamaForCausalLM (GQA, tied and untied, llama3 rope scaling)."""

import copy
import dataclasses
import shutil

import numpy as np
import pytest
import torch
from reference import need

import zupu
from zupu.checkpoint import load_model, save_model
from zupu.errors import CheckpointError, SettingError
from zupu.hf import gguf as zgguf
from zupu.hf import keymap
from zupu.hf.llama import from_state, names_for
from zupu.models.llama import PRESETS, Llama
from zupu.nn import Int4Linear

transformers = need("transformers")
gguf = need("gguf")

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def ours(smollm2_gguf, smollm2_tokenizer):
    g = zgguf.GGUF(smollm2_gguf)
    config = g.config()
    model = from_state(config, g.tensors(config), str(smollm2_gguf))
    return model, smollm2_tokenizer


@pytest.fixture(scope="module")
def theirs(smollm2_gguf):
    d, f = str(smollm2_gguf.parent), smollm2_gguf.name
    model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f).eval()
    return model, transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)


def greedy(model, ids, n, **kw):
    return torch.stack(list(model.generate(ids, n, temperature=0, **kw)), 1)


def test_real_gguf_logits_and_greedy_tokens_equal_transformers(ours, theirs):
    (model, tok), (hf, hf_tok) = ours, theirs
    ids = torch.tensor([tok.encode(PROMPT)])
    assert ids[0].tolist() == hf_tok(PROMPT, add_special_tokens=False)["input_ids"] == [504, 3575, 282, 4649, 314]
    with torch.no_grad():
        diff = (model(ids) - hf(ids).logits).abs().max().item()
    assert diff < 1e-4, diff
    n = 12
    mine = greedy(model, ids, n)
    ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                      pad_token_id=hf_tok.eos_token_id)[:, ids.size(1):]
    assert mine.tolist() == ref.tolist()
    assert "Paris" in tok.decode(mine[0].tolist())
    # a batch of prompts of different lengths, left-padded, decodes each as it would alone
    other = tok.encode("Water is made of")
    batch = torch.tensor([[2] * (ids.size(1) - len(other)) + other, ids[0].tolist()])
    mask = (torch.arange(batch.size(1)) >= ids.size(1) - len(other)).long()[None].repeat(2, 1)
    mask[1] = 1
    together = greedy(model, batch, 6, attention_mask=mask)
    assert together[1].tolist() == mine[0, :6].tolist()
    assert together[0].tolist() == greedy(model, torch.tensor([other]), 6)[0].tolist()


def test_int4_gguf_blocks_are_the_file_and_keep_greedy_tokens(smollm2_gguf, ours):
    model, tok = ours  # its greedy tokens are transformers' (the test above)
    g = zgguf.GGUF(smollm2_gguf)
    config = g.config()
    planes = g.int4_planes(config)
    assert len(planes) == 7 * config.num_hidden_layers + 1  # every matrix; Q8_0's tied embedding as two planes
    state = dict(model.state_dict())
    for key, hf_keys in [("embed_tokens.weight", ["model.embed_tokens.weight"]),
                         ("layers.5.attn.qkv.weight", [f"model.layers.5.self_attn.{x}_proj.weight" for x in "qkv"]),
                         ("layers.5.mlp.fc.weight", ["model.layers.5.mlp.gate_proj.weight",
                                                     "model.layers.5.mlp.up_proj.weight"]),
                         ("layers.5.mlp.proj.weight", ["model.layers.5.mlp.down_proj.weight"])]:
        # the blocks, nibbles and q/k row order are the file's, to the bit
        w = torch.cat([sum((q - 8) * s.repeat_interleave(32, 1) + z.repeat_interleave(32, 1) for q, s, z in parts)
                       for parts in (planes[k] for k in hf_keys)])
        assert torch.equal(w, state[key]), key
    q4 = zgguf.use_int4(from_state(config, g.tensors(config), str(smollm2_gguf)), planes)
    assert isinstance(q4.lm_head, Int4Linear) and isinstance(q4.layers[3].mlp.fc, Int4Linear)
    ids = torch.tensor([tok.encode(PROMPT)])
    with torch.no_grad():
        assert (q4(ids) - model(ids)).abs().max() < 2  # bfloat16 products and scales: close, not equal
    assert greedy(q4, ids, 12).tolist() == greedy(model, ids, 12).tolist()  # the parity test's greedy tokens
    # a prompt of 16+ tokens goes through each layer's dense copy (Int4Linear.DENSE_ROWS), its reply through int4;
    # here fp32 continues " 1889, and is one of the most": int4 leaves it at the 9th token with or without the
    # dense copy (measured), so the first 8 are held
    long = torch.tensor([tok.encode("The Eiffel Tower is a wrought-iron lattice tower in Paris. It was built for "
                                    "the World's Fair of")])
    assert long.size(1) >= Int4Linear.DENSE_ROWS and q4.layers[0].mlp.fc.dense is None
    assert greedy(q4, long, 8).tolist() == greedy(model, long, 8).tolist()
    assert q4.layers[0].mlp.fc.dense is not None
    with pytest.raises(SettingError, match="quantize='int8'.*int4"):
        zupu.from_pretrained(smollm2_gguf, quantize="int8")


def test_int4_linear_long_inputs_take_its_dense_copy():
    torch.manual_seed(0)
    out, inp = 80, 64
    planes = [(torch.randint(0, 16, (out, inp)), torch.rand(out, inp // 32) / 8, torch.randn(out, inp // 32) / 4)
              for _ in range(2)]  # two planes, as Q8_0's
    layer = Int4Linear(planes)
    w = sum((q - 8) * s.bfloat16().float().repeat_interleave(32, 1) + z.bfloat16().float().repeat_interleave(32, 1)
            for q, s, z in planes)  # the weight the kernel multiplies by, scales and zeros rounded to bfloat16
    x = torch.randn(Int4Linear.DENSE_ROWS, inp)
    short = torch.cat([layer(x[i:i + 4]) for i in range(0, len(x), 4)])  # int4 kernel, 4 rows a call
    assert layer.dense is None
    long = layer(x)  # all rows at once: the dense copy
    assert layer.dense is not None
    torch.testing.assert_close(layer(torch.eye(inp)).t(), w, rtol=0, atol=2**-7)  # each plane rounded to bfloat16
    exact = x @ w.t()
    for y in (short, long):
        torch.testing.assert_close(y, exact, rtol=0.02, atol=0.05 * exact.abs().max().item())
    assert "dense" not in layer.state_dict()
    # the kernel's work grows with rows x planes: 8 rows take the dense copy with two planes, the kernel with one
    rows = Int4Linear.DENSE_ROWS // 2
    one, two = Int4Linear(planes[:1]), Int4Linear(planes)
    one(x[:rows]), two(x[:rows])
    assert one.dense is None and two.dense is not None
    # the dense copy is oneDNN's packed layout, which Module.to cannot move and deepcopy cannot copy: both must work
    copied = copy.deepcopy(layer.to("cpu"))
    torch.testing.assert_close(copied(x), long, rtol=0, atol=0)
    # casting the module casts what it returns, not its bfloat16 scales and zeros, which the kernel needs as they are
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        cast = copy.deepcopy(one).to(dtype)
        assert cast.sz0.dtype == torch.bfloat16 and torch.equal(cast.sz0, one.sz0)
        xd = x[:2].to(dtype)
        torch.testing.assert_close(cast(xd), one(xd.float()).to(dtype), rtol=0, atol=0)


def test_tokenizer_and_chat_template_equal_transformers(ours, theirs):
    (_, tok), (_, hf_tok) = ours, theirs
    for text in ["Héllo wörld 你好 🤖\n\n  tabs\tand <|im_start|>user\nhi<|im_end|>",
                 "  numbers 12345678, code: def f(x): return x**2", ""]:
        assert tok.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|im_end|>") == [2] and 2 not in tok.encode("<|im_end|>", special=False)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Capital of Peru?"}]
    for messages in (chat, chat[1:], chat[1:2]):  # with and without a system prompt (the template adds its own)
        for gen in (True, False):
            assert tok.apply_chat_template(messages, gen) == hf_tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=gen)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2


def _random_llama(tied: bool, scaling: dict | None, seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    config = dataclasses.replace(PRESETS["tiny"], tie_word_embeddings=tied, rope_scaling=scaling, rope_theta=5000.0,
                                 num_attention_heads=4, num_key_value_heads=2)
    model = Llama(config).eval()
    with torch.no_grad():  # norm gains away from one, so a swapped or dropped norm shows
        for name, p in model.named_parameters():
            if "ln" in name or name.startswith("norm"):
                p.uniform_(0.5, 1.5)
    return model


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}


@pytest.mark.parametrize("tied,scaling", [(True, None), (False, LLAMA3)])
def test_random_llama_both_ways_through_transformers(tmp_path, tied, scaling):
    model = _random_llama(tied, scaling)
    ids = torch.randint(0, 96, (2, 40))
    save_model(model, tmp_path / "ours")
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert hf.config.num_key_value_heads == 2 and hf.config.tie_word_embeddings == tied
    with torch.no_grad():
        want = hf(ids).logits
        assert torch.allclose(model(ids), want, atol=1e-5)
        hf.save_pretrained(tmp_path / "theirs")
        back = load_model(tmp_path / "theirs")
        assert isinstance(back, Llama) and (back.lm_head.weight is back.embed_tokens.weight) == tied
        assert torch.allclose(back(ids), want, atol=1e-5)
    n = 10
    ref = hf.generate(ids[:, :8], attention_mask=torch.ones_like(ids[:, :8]), max_new_tokens=n, do_sample=False,
                      min_new_tokens=n, pad_token_id=0)[:, 8:]
    assert greedy(model, ids[:, :8], n).tolist() == ref.tolist()
    assert torch.equal(greedy(model, ids[:, :8], n), greedy(model, ids[:, :8], n, use_cache=False))


def _tiny_gguf(path, model: Llama, bad_type: bool = False) -> None:
    """Write `model` as a GGUF the way llama.cpp's converter does (q/k rows permuted, F32 tensors)."""
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_theta)
    state = {}
    hf_names = {zgguf.hf_name(g): g for g in _gguf_names(c)}
    for key, t in keymap.to_hf(model.state_dict(), names_for(c)).items():
        if key == "lm_head.weight" and c.tie_word_embeddings:
            continue
        a = t.detach().numpy()
        n = {"q_proj": c.num_attention_heads, "k_proj": c.num_key_value_heads}.get(key.split(".")[-2])
        if n:  # llama.cpp's permute: half-split rotary pairs -> interleaved
            a = a.reshape(n, 2, -1, a.shape[-1]).swapaxes(1, 2).reshape(a.shape)
        state[hf_names[key]] = a
    for name, a in state.items():
        w.add_tensor(name, a.astype(np.float64) if bad_type and name == "output_norm.weight" else a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _gguf_names(c):
    yield from ("token_embd.weight", "output_norm.weight", "output.weight")
    for i in range(c.num_hidden_layers):
        for part in zgguf._LAYER:
            yield f"blk.{i}.{part}.weight"


def test_gguf_q_k_permutation_is_undone(tmp_path):
    model = _random_llama(tied=False, scaling=None)
    _tiny_gguf(tmp_path / "tiny.gguf", model)
    back = zupu.from_pretrained(tmp_path / "tiny.gguf")
    ids = torch.randint(0, 96, (1, 20))
    with torch.no_grad():
        assert torch.allclose(back(ids), model(ids), atol=1e-6)
    with pytest.raises(SettingError, match="no Q4_1 or Q8_0"):  # F32 tensors: nothing to keep in 4 bits
        zupu.from_pretrained(tmp_path / "tiny.gguf", quantize="int4")
    with pytest.raises(SettingError, match="GGUF files only"):
        zupu.from_pretrained(tmp_path, quantize="int4")


def test_bad_gguf_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        zupu.from_pretrained(tmp_path / "absent.gguf")
    model = _random_llama(tied=True, scaling=None)
    _tiny_gguf(tmp_path / "f64.gguf", model, bad_type=True)
    with pytest.raises(CheckpointError, match="output_norm.weight.*F64"):
        zupu.from_pretrained(tmp_path / "f64.gguf")
    _tiny_gguf(tmp_path / "ok.gguf", model)
    data = (tmp_path / "ok.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.gguf.*corrupt or truncated"):
        zupu.from_pretrained(tmp_path / "cut.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(CheckpointError, match="junk.gguf"):
        zupu.from_pretrained(tmp_path / "junk.gguf")
    shutil.rmtree(tmp_path)
