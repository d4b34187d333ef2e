"""DALL-E: a discrete VAE turns an image into a grid of tokens, one causal Transformer models a caption's tokens
followed by the image's, and CLIP reranks what it draws.

A. Ramesh, M. Pavlov, G. Goh, S. Gray, C. Voss, A. Radford, M. Chen, I. Sutskever, "Zero-Shot Text-to-Image
Generation", ICML 2021. https://arxiv.org/abs/2102.12092

Stage 1 (section 2.1), the discrete VAE: the encoder gives each cell of an h x w grid logits over a codebook of
K entries; training relaxes the one-hot code with the Gumbel-softmax (Jang et al. 2017; Maddison et al. 2017)

    y = softmax((logits + g) / tau),  g = -log(-log u),  u ~ U(0, 1)        a relaxed one-hot per cell, (B, K, h, w)
    x_hat = decoder(codebook(y))                                          codebook: the K entries, a 1x1 conv
    loss = -log p(x | y) + beta * KL(q(z | x) || uniform(K))              the negative ELB, KL beta-weighted

with tau annealed from 1 to 1/16 and beta warmed up from 0, both on cosine schedules (appendix A.2: "we anneal
the relaxation temperature from 1 to 1/16" and increase the KL weight from 0 to 6.6). A trained dVAE's tokens
are each cell's argmax; tokens decode through their one-hot codes.

Stage 2 (section 2.2): the stream s = [t_1..t_T, z_1..z_hw], caption tokens then image tokens in raster order,
modelled by one causal Transformer (zupu's GPT) trained by next-token cross-entropy, the text's weighted 1/8 and
the image's 7/8. Sampling (section 2.3): the caption as the prompt, hw image tokens drawn one at a time with
top-k, decoded by the dVAE; of N drawings for one caption, CLIP's image-text similarity picks the best.

Deviations at this scale, each said where it is made: the reconstruction term is a Gaussian of fixed std
(`pixel_std`) instead of the paper's logit-Laplace (the images are small and their pixels not near-saturated);
encoder and decoder are small conv stacks instead of ResNets; text and image tokens share one embedding table
(image code k is token text_vocab_size + k) and learned absolute positions instead of separate tables and
row/column embeddings, so that the Transformer is zupu's GPT unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zupu import sampling
from zupu.errors import SettingError
from zupu.models.clip import CLIP, CLIPConfig
from zupu.models.clip import PRESETS as CLIP_PRESETS
from zupu.models.gpt import GPT, GPTConfig
from zupu.nn import KVCache

# --- the relaxation and its schedules ----------------------------------------------------------------------


def gumbel_softmax(logits: torch.Tensor, tau: float, dim: int = 1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """softmax((logits + g) / tau) along `dim` with g standard Gumbel noise: as tau -> 0 a one-hot sample of
    softmax(logits) (the Gumbel-max trick), at larger tau a smooth one that gradients pass through."""
    where = logits.device if generator is None else generator.device  # a host generator draws on the host
    u = torch.rand(logits.shape, generator=generator, device=where, dtype=logits.dtype).to(logits.device)
    g = -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))  # clamped: log(0) at either end
    return ((logits + g) / tau).softmax(dim)


def cosine(step: int, steps: int, start: float, end: float) -> float:
    """From `start` at step 0 to `end` at `steps` along half a cosine, then `end`."""
    if step >= steps:
        return end
    return end + (start - end) * (1 + math.cos(math.pi * step / steps)) / 2


def temperature(step: int, steps: int, start: float = 1.0, end: float = 1 / 16) -> float:
    """The relaxation temperature tau: 1 annealed to 1/16 over `steps` (the paper: its first 150,000 updates)."""
    return cosine(step, steps, start, end)


def kl_weight(step: int, steps: int, beta: float) -> float:
    """The KL weight: 0 warmed up to `beta` over `steps` (the paper: 6.6 over its first 5,000 updates)."""
    return cosine(step, steps, 0.0, beta)


# --- stage 1: the discrete VAE ------------------------------------------------------------------------------


@dataclass
class DVAEConfig:
    image_size: int = 28
    num_channels: int = 3
    hidden_size: int = 64
    vocab_size: int = 64  # K, the codebook's entries (the paper: 8192)
    downsample: int = 2  # stride-2 stages: 28 -> 7, a 7 x 7 grid of tokens
    pixel_std: float = 0.3  # std of the Gaussian reconstruction term, pixels in [-1, 1]
    background: float = -1.0  # the decoder's first output, everywhere: the images' black background

    def __post_init__(self):
        if self.image_size % 2 ** self.downsample:
            raise SettingError(f"image_size {self.image_size} is not divisible by 2^downsample = "
                               f"{2 ** self.downsample}")

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** self.downsample


class DVAE(nn.Module):
    config_class = DVAEConfig

    def __init__(self, config: DVAEConfig):
        super().__init__()
        self.config = c = config
        h = c.hidden_size
        down: list[nn.Module] = []
        for i in range(c.downsample):
            down += [nn.Conv2d(c.num_channels if i == 0 else h, h, 4, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(*down, nn.Conv2d(h, h, 3, padding=1), nn.ReLU(), nn.Conv2d(h, c.vocab_size, 1))
        self.codebook = nn.Conv2d(c.vocab_size, h, 1, bias=False)  # column k is code k's entry
        up: list[nn.Module] = []
        for i in range(c.downsample):
            last = i == c.downsample - 1
            up += [nn.ConvTranspose2d(h, c.num_channels if last else h, 4, stride=2, padding=1)]
            up += [] if last else [nn.ReLU()]
        self.decoder = nn.Sequential(nn.Conv2d(h, h, 3, padding=1), nn.ReLU(), *up)
        # Started at 0 (mid-grey), every cell's first gradients agree on darkening the picture, and Adam turns that
        # shared push into one code's logit growing in every cell: all 64 collapsed onto one code here.
        nn.init.constant_(up[-1].bias, c.background)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> logits over the codebook, (B, K, h, w)."""
        return self.encoder(x)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) one-hot or relaxed codes -> (B, C, H, W)."""
        return self.decoder(self.codebook(codes))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, h * w) token ids in raster order: each cell's likeliest code."""
        return self.encode(x).argmax(1).flatten(1)

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h * w) token ids -> (B, C, H, W)."""
        c = self.config
        one_hot = F.one_hot(tokens.view(-1, c.grid, c.grid), c.vocab_size)  # (B, h, w, K)
        return self.decode(one_hot.permute(0, 3, 1, 2).to(self.codebook.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction through hard tokens: (B, C, H, W) -> (B, C, H, W)."""
        return self.decode_tokens(self.tokens(x))

    def loss(self, x: torch.Tensor, tau: float, beta: float,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The beta-weighted negative ELB per pixel (so the step size does not depend on the image size), with
        the reconstruction's mean squared error and the KL in nats per image beside it."""
        c = self.config
        logits = self.encode(x)  # (B, K, h, w)
        x_hat = self.decode(gumbel_softmax(logits, tau, 1, generator))
        sq = (x_hat - x).square()
        nll = sq.sum((1, 2, 3)).mean() / (2 * c.pixel_std ** 2)  # -log N(x; x_hat, std^2), less its constant
        logq = logits.log_softmax(1)
        kl = (logq.exp() * (logq + math.log(c.vocab_size))).sum((1, 2, 3)).mean()  # KL(q || uniform), summed over cells
        return {"loss": (nll + beta * kl) / x[0].numel(), "mse": sq.mean().detach(), "kl": kl.detach()}


# --- stage 2: one Transformer over text then image tokens, and CLIP to rerank -----------------------------


@dataclass
class DALLEConfig:
    dvae: DVAEConfig = field(default_factory=DVAEConfig)
    # vocab_size = text_vocab_size + dvae.vocab_size, n_positions = text_len + dvae.grid ** 2
    transformer: GPTConfig = field(default_factory=lambda: GPTConfig(vocab_size=84, n_positions=53, n_embd=128,
                                                                     n_layer=4, n_head=4))
    text_vocab_size: int = 20
    text_len: int = 4  # caption tokens, padded: the text context
    text_loss_weight: float = 1 / 8  # the paper's; the image tokens' loss takes the rest, 7/8
    clip: CLIPConfig | None = None  # the reranker, trained on the same kind of pairs

    def __post_init__(self):
        vocab, positions = self.text_vocab_size + self.dvae.vocab_size, self.text_len + self.dvae.grid ** 2
        t = self.transformer
        if (t.vocab_size, t.n_positions) != (vocab, positions):
            raise SettingError(f"the transformer needs vocab_size = text_vocab_size + dvae.vocab_size = {vocab} and "
                               f"n_positions = text_len + grid^2 = {positions}, got {t.vocab_size} and "
                               f"{t.n_positions}")


class ImageTokens(nn.Module):
    """The transformer as `zupu.sampling.generate` drives it, with the text tokens' logits at -inf: what it
    draws after the caption are image codes only (ids offset by text_vocab_size)."""

    def __init__(self, transformer: GPT, text_vocab_size: int):
        super().__init__()
        self.transformer, self.text_vocab_size = transformer, text_vocab_size
        self.config = transformer.config

    def new_caches(self, max_len: int) -> list[KVCache]:
        return self.transformer.new_caches(max_len)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, caches: list[KVCache] | None = None,
                last_only: bool = False) -> torch.Tensor:
        logits = self.transformer(input_ids, attention_mask, position_ids, caches, last_only)
        return logits.index_fill(-1, torch.arange(self.text_vocab_size, device=logits.device), float("-inf"))


class DALLE(nn.Module):
    """`forward(input_ids)` is the Transformer's: (B, T) text-then-image ids -> logits (B, T, vocab)."""

    config_class = DALLEConfig

    def __init__(self, config: DALLEConfig):
        super().__init__()
        self.config = c = config
        self.dvae = DVAE(c.dvae)
        self.transformer = GPT(c.transformer)
        self.clip = CLIP(c.clip) if c.clip is not None else None

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.transformer(input_ids)

    def _check_text(self, text_ids: torch.Tensor) -> None:
        if text_ids.dim() != 2 or text_ids.size(1) != self.config.text_len:
            raise SettingError(f"caption ids of shape {tuple(text_ids.shape)}: this model reads captions of exactly "
                               f"text_len={self.config.text_len} tokens (padded); a longer caption does not fit its "
                               "text context")

    def loss(self, text_ids: torch.Tensor, image_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Next-token cross-entropy over the stream, text (B, T) then image tokens (B, h * w): the text's
        positions weighted text_loss_weight, the image's the rest."""
        self._check_text(text_ids)
        c = self.config
        seq = torch.cat([text_ids, image_tokens + c.text_vocab_size], 1)  # (B, T + hw)
        logits = self.transformer(seq[:, :-1])  # (B, T + hw - 1, V): position i predicts token i + 1
        target = seq[:, 1:]
        t = c.text_len - 1  # predictions of text tokens 2..T; the rest predict the image
        text = F.cross_entropy(logits[:, :t].flatten(0, 1), target[:, :t].flatten())
        image = F.cross_entropy(logits[:, t:].flatten(0, 1), target[:, t:].flatten())
        w = c.text_loss_weight
        return {"loss": w * text + (1 - w) * image, "text_loss": text.detach(), "image_loss": image.detach()}

    @torch.no_grad()
    def generate_images(self, text_ids: torch.Tensor, top_k: int | None = None, temperature: float = 1.0,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One drawing per caption row (B, text_len): images (B, C, H, W) and their tokens (B, h * w)."""
        self._check_text(text_ids)
        c = self.config
        steps = sampling.generate(ImageTokens(self.transformer, c.text_vocab_size), text_ids, c.dvae.grid ** 2,
                                  temperature=temperature, top_k=top_k, generator=generator)
        tokens = torch.stack(list(steps), 1) - c.text_vocab_size  # (B, hw)
        return self.dvae.decode_tokens(tokens), tokens

    @torch.no_grad()
    def clip_scores(self, images: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine similarity of each image (B, C, H, W) with its caption's CLIP tokens (B, T') -> (B,)."""
        if self.clip is None:
            raise SettingError("this DALL-E holds no CLIP to rerank with; train it with its recipe (which trains one) "
                               "or draw without reranking")
        image = F.normalize(self.clip.get_image_features(images), dim=-1)
        text = F.normalize(self.clip.get_text_features(input_ids, attention_mask), dim=-1)
        return (image * text).sum(-1)

    @torch.no_grad()
    def rerank(self, images: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """N drawings of each of B captions, (B, N, C, H, W), and the captions' CLIP tokens (B, T') -> the
        drawings' order by CLIP score, best first, (B, N)."""
        b, n = images.shape[:2]
        ids = input_ids.to(images.device).repeat_interleave(n, 0)  # (B * N, T'): row i * N + j is caption i
        mask = attention_mask.to(images.device).repeat_interleave(n, 0) if attention_mask is not None else None
        return self.clip_scores(images.flatten(0, 1), ids, mask).view(b, n).argsort(1, descending=True)


def dalle_config(dvae: DVAEConfig, text_vocab_size: int, text_len: int, clip: CLIPConfig | None = None,
                 **transformer) -> DALLEConfig:
    """A DALLEConfig whose transformer's vocabulary and context fit the text and the dVAE's grid;
    `transformer` holds the other GPTConfig fields (n_embd, n_layer, n_head, dropouts)."""
    gpt = GPTConfig(vocab_size=text_vocab_size + dvae.vocab_size, n_positions=text_len + dvae.grid ** 2,
                    **transformer)
    return DALLEConfig(dvae, gpt, text_vocab_size, text_len, clip=clip)


PRESETS = {
    "tiny": dalle_config(DVAEConfig(image_size=16, hidden_size=8, vocab_size=16), 12, 4, CLIP_PRESETS["tiny"],
                         n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "mnist": DALLEConfig(),
}
