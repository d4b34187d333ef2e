"""zupu.nn: attention against a written-out softmax(QK^T/sqrt(d))V in float64, masks, the KV cache, packed linears."""

import copy
import math

import pytest
import torch

from zupu.errors import SettingError
from zupu.nn import (
    Block,
    FeedForward,
    KVCache,
    MultiHeadAttention,
    PackedLinear,
    PatchEmbed,
    causal_mask,
    pack_linears,
    padding_mask,
    sinusoidal,
)


def naive(attn: MultiHeadAttention, x, keep=None, memory=None):
    c = x.size(-1)
    if attn.cross:
        q = attn.q(x)
        k, v = attn.kv(memory).split(c, -1)
    else:
        q, k, v = attn.qkv(x).split(c, -1)
    q, k, v = (z.view(*z.shape[:2], attn.n_head, -1).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    y = scores.softmax(-1) @ v
    return attn.proj(y.transpose(1, 2).reshape(x.shape))


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(2, 7, 16, dtype=torch.float64)


def test_attention_equals_the_formula(x):
    attn = MultiHeadAttention(16, 4).double()
    torch.testing.assert_close(attn(x), naive(attn, x))
    torch.testing.assert_close(attn(x, causal=True), naive(attn, x, causal_mask(7, 7)))


def test_bfloat16_attention_on_cpu_attends_in_float32(x):
    """Under bfloat16 autocast only the projections round to bfloat16: the attention kernel gets float32
    q, k, v (torch's CPU kernel is slow in bfloat16) and hands bfloat16 back; gradients flow through it."""
    attn = MultiHeadAttention(16, 4)
    x32 = x.float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x32, causal=True)
        q, k, v = attn.heads(attn.qkv(x32), 3)
    assert y.dtype == q.dtype == torch.bfloat16
    inner = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = attn.proj(inner.to(torch.bfloat16).transpose(1, 2).reshape(x32.shape))
    assert torch.equal(y, expected)
    torch.testing.assert_close(y.float(), attn(x32, causal=True), atol=0.03, rtol=0.03)  # bfloat16 rounding
    y.float().sum().backward()
    assert x32.grad is not None and torch.isfinite(x32.grad).all()


def test_padding_and_window_masks(x):
    attn = MultiHeadAttention(16, 4, window=3).double()
    am = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    keep = padding_mask(am) & causal_mask(7, 7, window=3)
    torch.testing.assert_close(attn(x, padding_mask(am), causal=True), naive(attn, x, keep))
    band = causal_mask(4, 4, window=2)
    assert band.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]


def test_attention_weights_ignore_masked_keys(x):
    attn = MultiHeadAttention(16, 4).double()
    am = torch.tensor([[1] * 5 + [0] * 2] * 2)
    y = attn(x, padding_mask(am))
    x2 = x.clone()
    x2[:, 5:] = 100.0  # changing padded positions must not change anything the real ones see
    torch.testing.assert_close(attn(x2, padding_mask(am))[:, :5], y[:, :5])


def test_cached_decoding_equals_full_pass(x):
    torch.manual_seed(1)
    block = Block(16, MultiHeadAttention(16, 4), FeedForward(16, 32), pre_ln=True).double().eval()
    full = block(x, causal=True)
    cache = KVCache(max_len=16)
    parts = [block(x[:, :3], causal=True, cache=cache)]  # prefill, then one token at a time
    parts += [block(x[:, t:t + 1], causal=True, cache=cache) for t in range(3, 7)]
    torch.testing.assert_close(torch.cat(parts, 1), full)
    with pytest.raises(SettingError, match="context window is full"):
        block(torch.zeros(2, 10, 16, dtype=torch.float64), causal=True, cache=cache)


def test_decoder_block_with_cross_attention_and_cache(x):
    torch.manual_seed(2)
    block = Block(16, MultiHeadAttention(16, 4), FeedForward(16, 32), pre_ln=False,
                  cross_attn=MultiHeadAttention(16, 4, cross=True)).double().eval()
    memory = torch.randn(2, 5, 16, dtype=torch.float64)
    mm = padding_mask(torch.tensor([[1] * 5, [1] * 3 + [0] * 2]))
    full = block(x, causal=True, memory=memory, memory_mask=mm)
    cache, cross = KVCache(8), KVCache(9)  # room to spare: only the 5 stored rows count
    steps = [block(x[:, t:t + 1], causal=True, memory=memory, memory_mask=mm, cache=cache, cross_cache=cross)
             for t in range(7)]
    torch.testing.assert_close(torch.cat(steps, 1), full)
    ca = block.cross_attn
    torch.testing.assert_close(ca(x, mm, memory=memory), naive(ca, x, mm, memory))


def test_sinusoids_match_the_paper():
    pe = sinusoidal(50, 8)
    pos, i = 13, 2
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 8)), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / 8)), abs=1e-6)
    split = sinusoidal(50, 8, interleave=False)
    torch.testing.assert_close(split[:, :4], pe[:, 0::2])


def test_patch_embed_shapes_and_errors():
    pe = PatchEmbed(28, 7, 1, 32)
    assert pe(torch.zeros(3, 1, 28, 28)).shape == (3, 16, 32)
    with pytest.raises(SettingError, match="28x28"):
        pe(torch.zeros(3, 1, 32, 32))
    with pytest.raises(SettingError, match="divisible"):
        MultiHeadAttention(30, 4)


def test_packed_linear_equals_linear_and_follows_weight_updates():
    torch.manual_seed(0)
    layer = PackedLinear(48, 96)
    pack_linears(layer)
    x = torch.randn(3, 5, 48)
    with torch.no_grad():
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)
    loss = layer(x).square().mean()  # with autograd on, the plain path: gradients reach the weight
    loss.backward()
    assert layer.weight.grad is not None
    torch.optim.SGD(layer.parameters(), lr=1.0).step()  # an in-place update: the packed copy must be rebuilt
    with torch.no_grad():
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)
        layer.load_state_dict({"weight": torch.zeros(96, 48), "bias": torch.ones(96)})
        assert torch.equal(layer(x), torch.ones(3, 5, 96))
        twin = copy.deepcopy(layer)  # after packing: oneDNN's packed copy has no storage, so copies repack
        assert torch.equal(twin(x), torch.ones(3, 5, 96))
