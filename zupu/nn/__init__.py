"""Shared building blocks, written once: attention (SDPA, masks, KV cache, grouped-query, cross-attention with
its own memory width), feed-forward and SwiGLU MLPs, RMSNorm, a Linear with packed inference weights, positions
(sinusoids, rotary, diffusion timesteps), the Transformer block with its norm/MLP/attention as parameters, patch
embedding."""

from zupu.nn.attention import KVCache, MultiHeadAttention, causal_mask, decoder_mask, padding_mask
from zupu.nn.blocks import Block
from zupu.nn.linear import Int4Linear, PackedLinear, pack_linears
from zupu.nn.mlp import FeedForward, SwiGLU, activation, quick_gelu
from zupu.nn.norms import RMSNorm
from zupu.nn.patch import PatchEmbed
from zupu.nn.positions import RotaryEmbedding, apply_rotary, rope_frequencies, sinusoidal, timestep_embedding

__all__ = ["Block", "FeedForward", "Int4Linear", "KVCache", "MultiHeadAttention", "PackedLinear", "PatchEmbed",
           "RMSNorm", "RotaryEmbedding", "SwiGLU", "activation", "apply_rotary", "causal_mask", "decoder_mask",
           "pack_linears", "padding_mask", "quick_gelu", "rope_frequencies", "sinusoidal", "timestep_embedding"]
