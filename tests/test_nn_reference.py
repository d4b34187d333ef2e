"""zupu.nn's modern blocks against the reference libraries' own modules, with their random weights copied in:
transformers' Llama (RMSNorm, rotary positions default and Llama-3, grouped-query attention with and without a
cache, SwiGLU MLP, the decoder layer), CLIP's quick_gelu, diffusers' timestep embedding and cross-attention."""

from functools import partial

import pytest
import torch
from reference import need

from zupu.errors import CheckpointError, SettingError, UnknownName
from zupu.hf import keymap
from zupu.nn import (
    Block,
    KVCache,
    MultiHeadAttention,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    apply_rotary,
    quick_gelu,
    rope_frequencies,
    timestep_embedding,
)

transformers = need("transformers")
diffusers = need("diffusers")
llama = need("transformers.models.llama.modeling_llama")

LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 256}


def llama_config(rope=None, **kw):
    """6 query heads and 2 key/value heads of 16; the Llama-3 band edges (64 and 256 positions) fall between
    the 8 wavelengths (6, 32, 167, 862, ...), so every branch of its scaling is taken."""
    cfg = dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, intermediate_size=40, rms_norm_eps=1e-5,
               rope_parameters=rope or {"rope_type": "default", "rope_theta": 10000.0})
    c = transformers.LlamaConfig(**{**cfg, **kw})
    c._attn_implementation = "eager"  # the written-out softmax, not the kernel zupu also calls
    return c


def randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Weights that are neither HF's init (ones for norms, zeros for biases) nor symmetric."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.5 if p.dim() == 1 else 0.0, 0.3)
    return module


def llama_attention_names(key: str) -> list[str] | dict[str, int]:
    """zupu MultiHeadAttention(96, 6, n_kv_head=2) -> LlamaAttention keys: q rows 96, k and v rows 32 each."""
    if key == "qkv.weight":
        return {"q_proj.weight": 96, "k_proj.weight": 32, "v_proj.weight": 32}
    return {"proj.weight": ["o_proj.weight"]}[key]


def zupu_attention(hf_attn) -> MultiHeadAttention:
    attn = MultiHeadAttention(96, 6, bias=False, n_kv_head=2)
    keymap.from_hf(attn, hf_attn.state_dict(), llama_attention_names, "LlamaAttention")
    return attn


def additive_causal(t: int, s: int) -> torch.Tensor:
    """HF's eager mask: (1, 1, t, s), 0 where the last t of s positions may look, -inf elsewhere."""
    keep = torch.ones(t, s, dtype=torch.bool).tril(s - t)
    return torch.zeros(t, s).masked_fill(~keep, float("-inf"))[None, None]


def test_rmsnorm_equals_llama():
    torch.manual_seed(0)
    ref = randomise(llama.LlamaRMSNorm(96, eps=1e-5))
    ours = RMSNorm(96, eps=1e-5)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 7, 96) * 3
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)
    xb = x.bfloat16()  # statistics in float32 for bfloat16 input, as Llama's
    torch.testing.assert_close(ours(xb), ref(xb), rtol=0, atol=0)
    x64 = x.double()
    torch.testing.assert_close(ours.double()(x64), x64 / x64.square().mean(-1, keepdim=True).add(1e-5).sqrt()
                               * ref.weight.double())


@pytest.mark.parametrize("rope", [None, LLAMA3], ids=["default", "llama3"])
def test_rotary_equals_llama(rope):
    cfg = llama_config(rope)
    ref = llama.LlamaRotaryEmbedding(cfg)
    ours = RotaryEmbedding(16, cfg.rope_parameters["rope_theta"], rope)
    torch.testing.assert_close(ours.inv_freq, ref.inv_freq, rtol=0, atol=0)
    if rope:  # the three bands: kept, interpolated, divided by factor
        base = rope_frequencies(16, LLAMA3["rope_theta"])
        ratio = (base / ours.inv_freq).tolist()
        assert ratio[:2] == [1, 1] and 1 < ratio[2] < 8 and ratio[3:] == pytest.approx([8] * 5)
    positions = torch.tensor([[0, 1, 2, 3, 500, 9000], [7, 8, 9, 10, 11, 12]])
    x = torch.zeros(2, 6, 96)
    cos, sin = ours(positions)
    ref_cos, ref_sin = ref(x, positions)
    torch.testing.assert_close(cos[:, 0], ref_cos, rtol=0, atol=0)
    torch.testing.assert_close(sin[:, 0], ref_sin, rtol=0, atol=0)
    torch.manual_seed(1)
    q, k = torch.randn(2, 6, 6, 16), torch.randn(2, 2, 6, 16)
    ref_q, ref_k = llama.apply_rotary_pos_emb(q, k, ref_cos, ref_sin)
    torch.testing.assert_close(apply_rotary(q, cos, sin), ref_q, rtol=0, atol=0)
    torch.testing.assert_close(apply_rotary(k, cos, sin), ref_k, rtol=0, atol=0)
    # relative: q_m . k_n depends only on m - n
    qm = apply_rotary(q[:1, :1, :1], *ours(torch.tensor([5])))
    kn = apply_rotary(k[:1, :1, :1], *ours(torch.tensor([2])))
    qm2 = apply_rotary(q[:1, :1, :1], *ours(torch.tensor([103])))
    kn2 = apply_rotary(k[:1, :1, :1], *ours(torch.tensor([100])))
    torch.testing.assert_close((qm * kn).sum(), (qm2 * kn2).sum(), rtol=1e-5, atol=1e-5)


def test_rope_scaling_errors():
    with pytest.raises(UnknownName, match="rope_type 'yarn'"):
        rope_frequencies(16, scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(SettingError, match="high_freq_factor"):
        rope_frequencies(16, scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "original_max_position_embeddings": 8192})


@pytest.mark.parametrize("rope", [None, LLAMA3], ids=["default", "llama3"])
def test_grouped_query_attention_equals_llama(rope):
    torch.manual_seed(2)
    cfg = llama_config(rope)
    ref = randomise(llama.LlamaAttention(cfg, layer_idx=0)).eval()
    ours = zupu_attention(ref).eval()
    assert ours.qkv.weight.shape == (96 + 2 * 32, 96)
    rotary, ours_rotary = llama.LlamaRotaryEmbedding(cfg), RotaryEmbedding(16, cfg.rope_parameters["rope_theta"], rope)
    x = torch.randn(2, 9, 96)
    positions = torch.arange(9)[None].expand(2, -1)
    expected = ref(x, rotary(x, positions), additive_causal(9, 9))[0]
    torch.testing.assert_close(ours(x, causal=True, rope=ours_rotary(positions)), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours(x, causal=True, rope=ours_rotary(torch.arange(9))), expected, rtol=1e-5, atol=1e-5)

    # decoding with a cache: a 4-token prefill, one token, then a 4-token chunk; each against HF's DynamicCache
    hf_cache, cache = transformers.DynamicCache(config=cfg), KVCache(max_len=12)
    for start, end in ((0, 4), (4, 5), (5, 9)):
        piece, pos = x[:, start:end], positions[:, start:end]
        mask = additive_causal(end - start, end) if end - start > 1 else None
        hf = ref(piece, rotary(piece, pos), mask, cache=hf_cache)[0]
        got = ours(piece, causal=True, cache=cache, rope=ours_rotary(pos))
        torch.testing.assert_close(got, hf, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got, expected[:, start:end], rtol=1e-5, atol=1e-5)
    assert cache.kv.shape == (2, 2, 2, 12, 16)  # (k/v, B, n_kv_head, max_len, hs): 3x smaller than the query heads


def test_grouped_query_attention_weights_and_errors():
    torch.manual_seed(3)
    attn = MultiHeadAttention(96, 6, n_kv_head=2).double()
    x = torch.randn(2, 5, 96, dtype=torch.float64)
    p = attn.weights(x)
    q, kv = attn.project(x)
    k, v = kv.repeat_interleave(3, 2)  # kv head j serves query heads 3j, 3j+1, 3j+2
    torch.testing.assert_close(p, (q @ k.transpose(-1, -2) / 4).softmax(-1))
    torch.testing.assert_close(attn(x), attn.proj((p @ v).transpose(1, 2).reshape(2, 5, 96)))
    with pytest.raises(SettingError, match="n_head 6 is not a multiple of n_kv_head 4"):
        MultiHeadAttention(96, 6, n_kv_head=4)


def test_swiglu_equals_llama_mlp():
    torch.manual_seed(4)
    ref = randomise(llama.LlamaMLP(llama_config())).double()
    ours = SwiGLU(96, 40).double()
    names = {"fc.weight": ["gate_proj.weight", "up_proj.weight"], "proj.weight": ["down_proj.weight"]}
    keymap.from_hf(ours, ref.state_dict(), names.__getitem__, "LlamaMLP")
    x = torch.randn(2, 7, 96, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-12, atol=1e-12)


def test_llama_decoder_layer_is_a_block_of_rmsnorm_gqa_and_swiglu():
    torch.manual_seed(5)
    cfg = llama_config(LLAMA3)
    ref = randomise(llama.LlamaDecoderLayer(cfg, layer_idx=0)).eval()
    ours = Block(96, attn=MultiHeadAttention(96, 6, bias=False, n_kv_head=2), mlp=SwiGLU(96, 40),
                 norm=partial(RMSNorm, eps=1e-5), pre_ln=True).eval()

    def names(key: str) -> list[str] | dict[str, int]:
        module, _, param = key.rpartition(".")
        if module == "attn.qkv":
            return {f"self_attn.{n}_proj.{param}": rows for n, rows in zip("qkv", (96, 32, 32), strict=True)}
        if module == "mlp.fc":
            return [f"mlp.gate_proj.{param}", f"mlp.up_proj.{param}"]
        return [{"attn.proj": "self_attn.o_proj", "mlp.proj": "mlp.down_proj", "ln1": "input_layernorm",
                 "ln2": "post_attention_layernorm"}[module] + "." + param]

    keymap.from_hf(ours, ref.state_dict(), names, "LlamaDecoderLayer")
    back = keymap.to_hf(ours.state_dict(), names)
    assert back.keys() == ref.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in ref.state_dict().items())
    x = torch.randn(2, 8, 96)
    positions = torch.arange(8)[None].expand(2, -1)
    expected = ref(x, additive_causal(8, 8), position_embeddings=llama.LlamaRotaryEmbedding(cfg)(x, positions))
    rope = RotaryEmbedding(16, LLAMA3["rope_theta"], LLAMA3)(positions)
    torch.testing.assert_close(ours(x, causal=True, rope=rope), expected, rtol=1e-5, atol=1e-5)


def test_quick_gelu_equals_clip():
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    torch.testing.assert_close(quick_gelu(x), transformers.activations.ACT2FN["quick_gelu"](x), rtol=0, atol=0)


@pytest.mark.parametrize(("dim", "flip", "shift", "scale"),
                         [(32, False, 1.0, 1.0), (32, True, 0.0, 1.0), (33, True, 1.0, 1000.0), (8, False, 0.5, 2.0)])
def test_timestep_embedding_equals_diffusers(dim, flip, shift, scale):
    from diffusers.models.embeddings import Timesteps, get_timestep_embedding

    t = torch.tensor([0.0, 1.0, 17.5, 999.0, 250.25])
    ours = timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift, scale=scale)
    ref = get_timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift, scale=scale)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    if scale == 1.0:
        torch.testing.assert_close(ours, Timesteps(dim, flip, shift)(t), rtol=0, atol=0)
    with pytest.raises(SettingError, match="one number per sample"):
        timestep_embedding(t[None], dim)


def test_cross_attention_with_its_own_memory_width_equals_diffusers():
    """Stable Diffusion's cross-attention: queries from 32-wide image features, keys and values from 20-wide
    text states; q/k/v without bias and the output projection with one (diffusers' defaults)."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(6)
    ref = randomise(Attention(32, cross_attention_dim=20, heads=4, dim_head=8)).eval()
    ours = MultiHeadAttention(32, 4, bias=False, cross=True, d_memory=20, proj_bias=True).eval()
    names = {"q.weight": ["to_q.weight"], "kv.weight": ["to_k.weight", "to_v.weight"],
             "proj.weight": ["to_out.0.weight"], "proj.bias": ["to_out.0.bias"]}
    keymap.from_hf(ours, ref.state_dict(), names.__getitem__, "diffusers Attention")
    x, memory = torch.randn(2, 10, 32), torch.randn(2, 6, 20)
    torch.testing.assert_close(ours(x, memory=memory), ref(x, encoder_hidden_states=memory), rtol=1e-5, atol=1e-5)
    keep = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])  # the second text is 4 tokens long
    additive = torch.zeros(2, 1, 6).masked_fill(keep[:, None] == 0, float("-inf"))
    torch.testing.assert_close(ours(x, keep.bool()[:, None, None], memory=memory),
                               ref(x, encoder_hidden_states=memory, attention_mask=additive), rtol=1e-5, atol=1e-5)


def test_fused_projection_with_unequal_parts_both_ways():
    """SmolLM2's attention: 9 query heads and 3 key/value heads of 64, HF's q/k/v_proj stacked as [576, 192, 192]."""
    torch.manual_seed(7)
    attn = MultiHeadAttention(576, 9, bias=False, n_kv_head=3)
    sizes = {"q_proj.weight": 576, "k_proj.weight": 192, "v_proj.weight": 192}

    def names(key: str) -> list[str] | dict[str, int]:
        return sizes if key == "qkv.weight" else ["o_proj.weight"]

    hf = keymap.to_hf(attn.state_dict(), names)
    assert {k: tuple(v.shape) for k, v in hf.items()} == {
        "q_proj.weight": (576, 576), "k_proj.weight": (192, 576), "v_proj.weight": (192, 576),
        "o_proj.weight": (576, 576)}
    w = attn.qkv.weight
    assert torch.equal(hf["k_proj.weight"], w[576:768]) and torch.equal(hf["v_proj.weight"], w[768:])
    back = MultiHeadAttention(576, 9, bias=False, n_kv_head=3)
    keymap.from_hf(back, hf, names, "model.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), attn.state_dict().values(), strict=True))

    wrong = {**hf, "k_proj.weight": torch.zeros(576, 576)}  # a checkpoint with as many kv heads as query heads
    with pytest.raises(CheckpointError, match=r"k_proj.weight: checkpoint \(576, 576\) vs model \(192, 576\)"):
        keymap.from_hf(back, wrong, names, "model.safetensors")
    with pytest.raises(CheckpointError, match="add up to 768 rows, the tensor has 960"):
        keymap.to_hf(attn.state_dict(), lambda k: {"q_proj.weight": 576, "k_proj.weight": 192}
                     if k == "qkv.weight" else ["o_proj.weight"])
