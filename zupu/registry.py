"""The family tree: every member, its paper, its parents, and where its code lives.

A member *works* when its recipes module `zupu.recipes.<module>` exists; until then it is listed as
planned. Model code lives in `zupu.models.<module>`, HF checkpoint mapping in `zupu.hf.<module>`.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any

from zupu.errors import MemberNotReady, UnknownMember, UnknownName

if TYPE_CHECKING:
    from torch import nn

    from zupu.recipe import Recipe


@dataclass(frozen=True)
class Member:
    name: str
    year: int
    paper: str
    authors: str
    url: str
    parents: tuple[str, ...] = ()
    summary: str = ""
    era: str = ""
    module: str = ""  # zupu.models.<module>, zupu.recipes.<module>; defaults to the name
    model: str = ""  # default model class in zupu.models.<module>
    # the HF config.json model_type values it loads (diffusers' configs: their _class_name)
    hf_model_types: tuple[str, ...] = field(default=())

    @property
    def module_name(self) -> str:
        return self.module or self.name.replace("-", "_")

    @property
    def works(self) -> bool:
        return importlib.util.find_spec(f"zupu.recipes.{self.module_name}") is not None

    @property
    def status(self) -> str:
        return "works" if self.works else "planned"

    def recipes(self) -> dict[str, Recipe]:
        """The member's recipes by name; the first is the default."""
        if not self.works:
            raise MemberNotReady(f"member {self.name!r} is planned but not implemented yet (see `zupu tree`)")
        mod = importlib.import_module(f"zupu.recipes.{self.module_name}")
        return {r.name: r for r in mod.RECIPES}

    def recipe(self, name: str | None = None) -> Recipe:
        recipes = self.recipes()
        if name is None:
            return next(iter(recipes.values()))
        if name not in recipes:
            raise UnknownName(f"recipe of {self.name}", name, list(recipes))
        return recipes[name]

    def model_module(self):
        return importlib.import_module(f"zupu.models.{self.module_name}")


ERAS: tuple[str, ...] = ("1943–1986", "1983–2012", "2017–", "tools")  # the tree's lanes, oldest first
_ERA1, _ERA2, _ERA3, _TOOLS = ERAS

MEMBERS: tuple[Member, ...] = (
    Member("mp-neuron", 1943, "A Logical Calculus of the Ideas Immanent in Nervous Activity",
           "W. McCulloch, W. Pitts", "https://doi.org/10.1007/BF02478259", (),
           "binary threshold units with absolute inhibition; logic by hand, no learning", _ERA1,
           model="MPNetwork"),
    Member("perceptron", 1958, "The Perceptron: A Probabilistic Model for Information Storage and "
           "Organization in the Brain", "F. Rosenblatt", "https://doi.org/10.1037/h0042519", ("mp-neuron",),
           "learned weights by the error-driven rule; Mark-1 recognised letters", _ERA1, model="Perceptron"),
    Member("backprop-mlp", 1986, "Learning representations by back-propagating errors",
           "D. Rumelhart, G. Hinton, R. Williams", "https://doi.org/10.1038/323533a0", ("perceptron",),
           "hidden units trained by propagating deltas backwards", _ERA1, module="backprop_mlp", model="MLP"),
    Member("rbm", 1986, "Boltzmann machine (1983) / restricted Boltzmann machine (Smolensky 1986, "
           "Hinton 2002 CD)", "G. Hinton, T. Sejnowski; P. Smolensky",
           "https://www.cs.toronto.edu/~hinton/absps/tr00-004.pdf", ("mp-neuron",),
           "an energy model of binary units, trained by contrastive divergence", _ERA2, model="RBM"),
    Member("dbn", 2006, "A fast learning algorithm for deep belief nets", "G. Hinton, S. Osindero, Y. Teh",
           "https://doi.org/10.1162/neco.2006.18.7.1527", ("rbm", "backprop-mlp"),
           "greedy layer-wise RBM pre-training, then fine-tuning", _ERA2, model="DBN"),
    Member("lenet", 1989, "Backpropagation Applied to Handwritten Zip Code Recognition / Gradient-Based "
           "Learning Applied to Document Recognition (1998)", "Y. LeCun et al.",
           "http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf", ("backprop-mlp",),
           "shared-weight convolutions and subsampling", _ERA2, model="LeNet5"),
    Member("alexnet", 2012, "ImageNet Classification with Deep Convolutional Neural Networks",
           "A. Krizhevsky, I. Sutskever, G. Hinton",
           "https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks",
           ("lenet", "dbn"), "ReLU, dropout, LRN, overlapping pooling, augmentation", _ERA2, model="AlexNet"),
    Member("lstm", 1997, "Long Short-Term Memory", "S. Hochreiter, J. Schmidhuber",
           "https://doi.org/10.1162/neco.1997.9.8.1735", ("backprop-mlp",),
           "gated memory cell that carries gradients across long gaps", _ERA2, model="LSTM"),
    Member("seq2seq-attention", 2014, "Neural Machine Translation by Jointly Learning to Align and "
           "Translate", "D. Bahdanau, K. Cho, Y. Bengio", "https://arxiv.org/abs/1409.0473", ("lstm",),
           "encoder-decoder RNN with additive attention", _ERA2, module="seq2seq_attention",
           model="Seq2Seq"),
    Member("transformer", 2017, "Attention Is All You Need", "A. Vaswani et al.",
           "https://arxiv.org/abs/1706.03762", ("seq2seq-attention",),
           "attention only: multi-head self- and cross-attention", _ERA3, model="Transformer",
           hf_model_types=("marian",)),
    Member("gpt", 2018, "Improving Language Understanding by Generative Pre-Training (GPT-1); GPT-2 (2019); "
           "GPT-3 (2020)", "A. Radford et al.; T. Brown et al.",
           "https://cdn.openai.com/research-covers/language-unsupervised/language_understanding_paper.pdf",
           ("transformer",), "decoder-only Transformer, pre-trained on next-token prediction", _ERA3,
           model="GPT", hf_model_types=("gpt2", "openai-gpt")),
    Member("bert", 2018, "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
           "J. Devlin, M. Chang, K. Lee, K. Toutanova", "https://arxiv.org/abs/1810.04805", ("transformer",),
           "encoder pre-trained by masked language modelling", _ERA3, model="Bert", hf_model_types=("bert",)),
    Member("vit", 2020, "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
           "A. Dosovitskiy et al.", "https://arxiv.org/abs/2010.11929", ("transformer",),
           "image patches as tokens in a Transformer encoder", _ERA3, model="ViT", hf_model_types=("vit",)),
    Member("clip", 2021, "Learning Transferable Visual Models From Natural Language Supervision",
           "A. Radford et al.", "https://arxiv.org/abs/2103.00020", ("vit", "gpt"),
           "contrastive image-text pre-training", _ERA3, model="CLIP", hf_model_types=("clip",)),
    Member("dalle", 2021, "Zero-Shot Text-to-Image Generation", "A. Ramesh et al.",
           "https://arxiv.org/abs/2102.12092", ("gpt", "clip"),
           "discrete image tokens generated by a Transformer", _ERA3, model="DALLE"),
    Member("diffusion", 2020, "Denoising Diffusion Probabilistic Models (2020); High-Resolution Image "
           "Synthesis with Latent Diffusion Models (2022)", "J. Ho et al.; R. Rombach et al.",
           "https://arxiv.org/abs/2006.11239", ("clip",),
           "denoising diffusion, latent and text-conditioned (Stable Diffusion)", _ERA3, model="UNet",
           hf_model_types=("UNet2DModel", "UNet2DConditionModel")),
    Member("llama", 2023, "LLaMA: Open and Efficient Foundation Language Models", "H. Touvron et al.",
           "https://arxiv.org/abs/2302.13971", ("gpt",), "RMSNorm, RoPE, SwiGLU, grouped-query attention",
           _ERA3, model="Llama", hf_model_types=("llama",)),
    Member("rlhf", 2022, "Training language models to follow instructions with human feedback (InstructGPT)",
           "L. Ouyang et al.", "https://arxiv.org/abs/2203.02155", ("gpt",),
           "SFT, a reward model from preferences, PPO; and DPO (2023)", _ERA3, model="RewardModel"),
    Member("chat", 2022, "ChatGPT", "OpenAI", "https://openai.com/blog/chatgpt", ("rlhf", "llama"),
           "a chat template, a context window and a sampling loop", _ERA3),
    Member("sam", 2023, "Segment Anything", "A. Kirillov et al.", "https://arxiv.org/abs/2304.02643",
           ("vit",), "promptable segmentation: image encoder, prompt encoder, mask decoder", _ERA3, model="SAM"),
    Member("alphazero", 2016, "Mastering the game of Go with deep neural networks and tree search "
           "(AlphaGo); AlphaGo Zero (2017)", "D. Silver et al.", "https://doi.org/10.1038/nature16961",
           ("lenet",), "Monte-Carlo tree search guided by a policy/value network", _ERA3, model="PolicyValueNet"),
    Member("scaling", 2020, "Scaling Laws for Neural Language Models", "J. Kaplan et al.",
           "https://arxiv.org/abs/2001.08361", ("gpt",), "loss falls as a power law in model size", _TOOLS),
)


@cache
def _by_name() -> dict[str, Member]:
    return {m.name: m for m in MEMBERS}


def members() -> list[Member]:
    return list(MEMBERS)


def get(name: str) -> Member:
    try:
        return _by_name()[name]
    except KeyError:
        raise UnknownMember(name, list(_by_name())) from None


def member_for_model_type(model_type: str) -> Member | None:
    return next((m for m in MEMBERS if model_type in m.hf_model_types), None)


def create(member: str, preset: str = "tiny", model: str | None = None, **overrides: Any) -> nn.Module:
    """Build a member's model from a named preset, e.g. `create("gpt", "gpt2", n_layer=2)`."""
    m = get(member)
    mod = m.model_module()
    presets = mod.PRESETS
    if preset not in presets:
        raise UnknownName(f"preset of {member}", preset, list(presets))
    cfg = presets[preset]
    unknown = set(overrides) - set(cfg.__dataclass_fields__)
    if unknown:
        raise UnknownName(f"config field of {member}", sorted(unknown)[0], list(cfg.__dataclass_fields__))
    return getattr(mod, model or m.model)(replace(cfg, **overrides))
