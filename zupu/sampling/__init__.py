"""What is not a layer: how a model's outputs become tokens and text.

    decoding.py  `sample` (temperature, top-k, top-p) and `generate`, the KV-cache loop of a causal LM
    text.py      `stream_text`: token ids -> text pieces, never half a UTF-8 character, stop strings
    beam.py      `beam_search` for any left-to-right decoder (seq2seq-attention, transformer)
    mcts.py      `MCTS`: PUCT tree search guided by a policy-value network (alphazero)

Noise schedulers and guidance belong here too when their members arrive.
"""

from zupu.sampling.beam import beam_search
from zupu.sampling.decoding import generate, sample
from zupu.sampling.mcts import MCTS
from zupu.sampling.text import stream_text

__all__ = ["MCTS", "beam_search", "generate", "sample", "stream_text"]
