"""What is not a layer: how a model's outputs become tokens and text.

    decoding.py  `sample` (temperature, top-k, top-p) and `generate`, the KV-cache loop of a causal LM
    text.py      `stream_text`: token ids -> text pieces, never half a UTF-8 character, stop strings
    beam.py      `beam_search` for any left-to-right decoder (seq2seq-attention, transformer)
    mcts.py      `MCTS`: PUCT tree search guided by a policy-value network (alphazero)
    schedulers.py  `DDPMScheduler`, `DDIMScheduler`: diffusion's noise schedules, in diffusers' API
    denoise.py   `denoise`: a diffusion model's sampling loop, classifier-free guidance, img2img, inpainting
"""

from zupu.sampling.beam import beam_search
from zupu.sampling.decoding import generate, sample
from zupu.sampling.denoise import denoise
from zupu.sampling.mcts import MCTS
from zupu.sampling.schedulers import DDIMScheduler, DDPMScheduler, scheduler_from_config
from zupu.sampling.text import stream_text

__all__ = ["DDIMScheduler", "DDPMScheduler", "MCTS", "beam_search", "denoise", "generate", "sample",
           "scheduler_from_config", "stream_text"]
