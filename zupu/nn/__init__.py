"""Shared building blocks, written once: attention (SDPA, masks, KV cache), feed-forward, a Linear with
packed inference weights, positions, the Transformer layer, patch embedding."""

from zupu.nn.attention import KVCache, MultiHeadAttention, causal_mask, padding_mask
from zupu.nn.blocks import TransformerBlock
from zupu.nn.linear import PackedLinear, pack_linears
from zupu.nn.mlp import FeedForward, activation
from zupu.nn.patch import PatchEmbed
from zupu.nn.positions import sinusoidal

__all__ = ["FeedForward", "KVCache", "MultiHeadAttention", "PackedLinear", "PatchEmbed", "TransformerBlock",
           "activation", "causal_mask", "pack_linears", "padding_mask", "sinusoidal"]
