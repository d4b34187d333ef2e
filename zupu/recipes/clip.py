"""CLIP recipes: contrastive pre-training from scratch on real image-text pairs, judged on what it never saw.

`emoji`: the 3,786 Noto emoji, each captioned by its Unicode name and short names ("grinning face, grinning");
a tenth of the base emoji (with all their skin-tone variants) is held out, and retrieval among them in both
directions (image -> caption, caption -> image) is scored by recall@1 and recall@5 against chance.

`zero-shot-digits`: MNIST digits painted in one of six colours and captioned "a red seven"; ten colour x digit
combinations never appear in training. Zero-shot classification of held-out test images among all 60 captions
(section 3.1 of the paper) is compared with chance and with a linear probe fitted on the same image features
with labels for every combination (the paper's supervised reference, figure 5).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from functools import cache

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from zupu import data
from zupu.atomic import write_json
from zupu.data.painted_digits import COLOURS, DIGITS, captions, held_out, mnist_splits, paint
from zupu.data.transforms import images, shift_and_flip, split_indices
from zupu.models.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from zupu.recipe import Milestone, Recipe
from zupu.tokenizers.clip import CLIPTokenizer
from zupu.train.batches import AugmentedBatches, TensorBatches
from zupu.train.device import of, to_device
from zupu.train.optim import make_optimizer, make_schedule
from zupu.train.plots import save
from zupu.train.trainer import Trainer

EMBED_BATCH = 512


@cache
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.openai()


def config(s, image_size: int, context: int) -> CLIPConfig:
    tok = tokenizer()
    text = CLIPTextConfig(vocab_size=tok.vocab_size, hidden_size=s.hidden_size, intermediate_size=4 * s.hidden_size,
                          num_hidden_layers=s.text_layers, num_attention_heads=s.heads,
                          max_position_embeddings=context, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    vision = CLIPVisionConfig(hidden_size=s.hidden_size, intermediate_size=4 * s.hidden_size,
                              num_hidden_layers=s.vision_layers, num_attention_heads=s.heads,
                              image_size=image_size, patch_size=s.patch_size)
    return CLIPConfig(text, vision, projection_dim=s.projection_dim)


@torch.no_grad()
def image_embeddings(model: CLIP, pixels: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> unit-length (N, projection_dim), in batches on the model's device, returned to the host
    (where the scores are counted)."""
    model.eval()
    device = of(model)
    return torch.cat([F.normalize(model.get_image_features(pixels[i:i + EMBED_BATCH].to(device)), dim=-1).cpu()
                      for i in range(0, len(pixels), EMBED_BATCH)])


@torch.no_grad()
def text_embeddings(model: CLIP, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, T) token ids -> unit-length (N, projection_dim), in batches on the model's device, returned to the host."""
    model.eval()
    device = of(model)
    return torch.cat([F.normalize(model.get_text_features(*to_device((ids[i:i + EMBED_BATCH], mask[i:i + EMBED_BATCH]),
                                                                     device)), dim=-1).cpu()
                      for i in range(0, len(ids), EMBED_BATCH)])


def save_preprocessing(run, image_size: int) -> None:
    """Beside the weights: the BPE files and how pixels were fed (x / 255 - 0.5) / 0.5, as transformers'
    CLIPImageProcessor reads them; `zupu embed --model RUN --image` reads both."""
    tokenizer().save(run.out)
    write_json(run.path("preprocessor_config.json"), {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": image_size},
        "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
        "do_convert_rgb": True})


def recall_at(similarity: torch.Tensor, k: int) -> float:
    """The fraction of rows whose true match (the diagonal) is among their k most similar columns."""
    top = similarity.topk(min(k, similarity.size(1)), dim=1).indices  # (N, k)
    return (top == torch.arange(len(similarity))[:, None]).any(1).float().mean().item()


def fit(model: CLIP, s, batches, run, evaluate, monitor: str, desc: str) -> dict:
    """The symmetric contrastive loss over shuffled pairs (`batches(step)` -> pixels, ids, mask), AdamW with a
    linear warm-up and cosine decay; keeps the weights with the best `monitor` on the validation split."""
    steps = s.epochs * batches.steps_per_epoch
    opt = make_optimizer("adamw", model.parameters(), s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.98))

    def step(batch):
        pixels, ids, mask = batch
        width = int(mask.sum(1).max())  # the batch's longest caption: the padding columns only cost time
        return {"loss": model(ids[:, :width], pixels, mask[:, :width], return_loss=True).loss}

    return Trainer(model, step, batches, opt, steps, run=run,
                   scheduler=make_schedule(opt, "cosine", steps, warmup=steps // 10), evaluate=evaluate,
                   eval_every=max(1, steps // 5), log_every=10, grad_clip=1.0, monitor=monitor, mode="max",
                   desc=desc).fit()


# --- emoji ------------------------------------------------------------------------------------------------


@dataclass
class EmojiSettings:
    image_size: int = 32  # the 64px emoji averaged down: 4x4 patches of 8px
    patch_size: int = 8
    hidden_size: int = 64
    heads: int = 4
    vision_layers: int = 2
    text_layers: int = 2
    projection_dim: int = 64
    context: int = 32  # tokens; longer captions are cut (still ending with <|endoftext|>)
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    shift: int = 2  # random translations, pixels
    test_fraction: float = 0.1  # of the base emoji, held out with all their skin tones
    val_fraction: float = 0.1  # of the rest: the split the settings were chosen on
    split_seed: int = 0  # fixes the held-out emoji, whatever the run's seed


def emoji_caption(name: str, keywords: tuple[str, ...]) -> str:
    """The name, then each short name not already inside it: "grinning face" (its short name "grinning" adds
    nothing), "keycap: *, keycap star"."""
    extra = [k for k in keywords if k not in name]
    return ", ".join([name, *extra])


@cache
def emoji_data(image_size: int, context: int, test_fraction: float, val_fraction: float, split_seed: int) -> dict:
    """Pixels (N, 3, S, S) in [-1, 1], captions, their ids/masks, and index splits by base emoji."""
    e = data.load("emoji-noto-64")
    pixels = images(e.images.transpose(0, 3, 1, 2).reshape(-1, 64, 64), image_size)  # (N*3, S, S) in [0, 1]
    pixels = pixels.reshape(len(e.names), 3, image_size, image_size) * 2 - 1
    captions = [emoji_caption(n, k) for n, k in zip(e.names, e.keywords, strict=True)]
    batch = tokenizer()(captions, context_length=context, truncation=True)
    groups = torch.from_numpy(e.groups)
    n_groups = int(groups.max()) + 1
    rest, test = split_indices(n_groups, test_fraction, split_seed)
    train_i, val_i = split_indices(len(rest), val_fraction, split_seed + 1)
    train, val = rest[train_i], rest[val_i]
    members = {name: torch.isin(groups, ids).nonzero()[:, 0] for name, ids in
               (("train", train), ("val", val), ("test", test))}
    return {"pixels": pixels, "captions": captions, "ids": batch["input_ids"], "mask": batch["attention_mask"],
            **members}


def _emoji(s: EmojiSettings) -> dict:
    return emoji_data(s.image_size, s.context, s.test_fraction, s.val_fraction, s.split_seed)


def retrieval(model: CLIP, d: dict, split: str) -> dict[str, float]:
    idx = d[split]
    sim = image_embeddings(model, d["pixels"][idx]) @ text_embeddings(model, d["ids"][idx], d["mask"][idx]).T
    out = {f"{split}_image_to_text_r{k}": recall_at(sim, k) for k in (1, 5)}
    out.update({f"{split}_text_to_image_r{k}": recall_at(sim.T, k) for k in (1, 5)})
    out[f"{split}_mean_r1"] = (out[f"{split}_image_to_text_r1"] + out[f"{split}_text_to_image_r1"]) / 2
    return out


def fit_emoji(model: CLIP, s: EmojiSettings, run, seed: int) -> dict:
    """Train on the emoji's training split, shifted at random; keep the weights best on the validation split
    (`run` may be None: the diffusion recipe trains its text encoder this way)."""
    d = _emoji(s)
    tr = d["train"]
    batches = AugmentedBatches(TensorBatches(d["pixels"][tr], d["ids"][tr], d["mask"][tr],
                                             batch_size=s.batch_size, seed=seed),
                               lambda x, g: shift_and_flip(x, s.shift, False, g, fill=1.0), seed)
    return fit(model, s, batches, run, lambda: retrieval(model, d, "val"), "val_mean_r1", "clip emoji")


class Emoji(Recipe):
    name = "emoji"
    summary = ("CLIP from scratch on 3,786 Noto emoji and their names: retrieval among 356 held-out emoji "
               "(ViT 2x64 on 32px, text 2x64, real CLIP BPE)")
    Settings = EmojiSettings
    # measured 0.278 at seed 0 (recall@5 0.47 / 0.47; 103 s of one core)
    milestone = Milestone("test_mean_r1", 0.2, paper="chance 1/356 = 0.0028; CLIP's 400M pairs are not ours: "
                          "the held-out emoji share only words (face, flag, cat...) and skin tones with the rest")
    quick = {"epochs": 10}
    # measured 0.117 / 0.131 / 0.096 at seeds 0 / 1 / 2 (32 s of one core each)
    quick_milestone = Milestone("test_mean_r1", 0.08, paper="chance 1/356 = 0.0028")
    quick_seconds = 32.0
    tiny = {"epochs": 1, "hidden_size": 16, "heads": 2, "vision_layers": 1, "text_layers": 1, "projection_dim": 8,
            "image_size": 16}

    def build(self, s: EmojiSettings) -> CLIP:
        return CLIP(config(s, s.image_size, s.context))

    def train(self, model: CLIP, s: EmojiSettings, run) -> dict:
        d = _emoji(s)
        save_preprocessing(run, s.image_size)
        fit_emoji(model, s, run, run.seed)
        tr, n = d["train"], len(d["test"])
        return {**retrieval(model, d, "val"), **self.evaluate(model, s), "test_emoji": n,
                "chance_r1": 1 / n, "chance_r5": 5 / n, "train_emoji": len(tr),
                "parameters": sum(p.numel() for p in model.parameters())}

    def evaluate(self, model: CLIP, s: EmojiSettings) -> dict:
        return retrieval(model, _emoji(s), "test")

    def example(self, s: EmojiSettings) -> tuple[torch.Tensor, torch.Tensor]:
        d = _emoji(s)
        return d["ids"][:4], d["pixels"][:4]

    def figures(self, model: CLIP, s: EmojiSettings, run) -> None:
        d = _emoji(s)
        idx = d["test"]
        sim = text_embeddings(model, d["ids"][idx], d["mask"][idx]) @ image_embeddings(model, d["pixels"][idx]).T
        queries = torch.linspace(0, len(idx) - 1, 6).long()
        fig, axes = plt.subplots(len(queries), 6, figsize=(9, 1.5 * len(queries)),
                                 gridspec_kw={"width_ratios": [2.2, 1, 1, 1, 1, 1]})
        for row, q in enumerate(queries.tolist()):
            axes[row, 0].text(0, 0.5, textwrap.fill(d["captions"][idx[q]], 28, max_lines=4), fontsize=7,
                              va="center")
            for col, j in enumerate(sim[q].topk(5).indices.tolist(), start=1):
                axes[row, col].imshow(((d["pixels"][idx[j]].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
                if j == q:
                    axes[row, col].set_title("match", fontsize=7, color="green")
            for ax in axes[row]:
                ax.axis("off")
        fig.suptitle(f"caption -> its 5 nearest of {len(idx)} held-out emoji", fontsize=9)
        save(fig, run.path("retrieval.png"))


# --- zero-shot digits -------------------------------------------------------------------------------------

@dataclass
class DigitSettings:
    patch_size: int = 7  # 4x4 patches of the 28px digit
    hidden_size: int = 64
    heads: int = 4
    vision_layers: int = 2
    text_layers: int = 2
    projection_dim: int = 64
    context: int = 8  # "<|startoftext|> a red seven <|endoftext|>" is 5 tokens
    epochs: int = 20  # of 90 steps: the 4,500 training digits seen once each on average
    lr: float = 2e-3
    weight_decay: float = 0.1
    val_size: int = 500  # carved from the 5,000 training digits for choosing settings
    test_limit: int = 2000  # t10k digits scored (the first ones)
    probe_per_class: int = 40  # labelled training images per combination for the linear probe
    held_out_shift: int = 0  # which colour each digit is held out in (see `held_out`)


@cache
def digit_data(val_size: int, test_limit: int) -> dict:
    batch = tokenizer()(captions(), context_length=8)
    return {**mnist_splits(val_size, test_limit), "ids": batch["input_ids"],
            "mask": batch["attention_mask"]}  # prompt of (digit d, colour c): d * 6 + c


class PaintedBatches:
    """Each step, one training digit for every seen (digit, colour) pair, painted and captioned: 50 pairs, each
    caption once. CLIP's loss takes the diagonal as the only match; a random batch of 128 over 60 captions would
    repeat captions and push true matches apart as negatives."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, prompts: tuple[torch.Tensor, torch.Tensor], shift: int,
                 seed: int):
        self.x, self.seed = x, seed
        self.ids, self.mask = prompts
        digit = torch.arange(10).repeat_interleave(len(COLOURS))  # (60,) the pair d * 6 + c
        colour = torch.arange(len(COLOURS)).repeat(10)
        seen = colour != held_out(digit, shift)
        self.digit, self.colour = digit[seen], colour[seen]  # (50,)
        self.combo = self.digit * len(COLOURS) + self.colour
        order = torch.argsort(y, stable=True)
        self.first = torch.searchsorted(y[order], torch.arange(10))  # where each digit's run starts in `order`
        self.count = torch.bincount(y, minlength=10)
        self.order = order
        self.steps_per_epoch = len(y) // len(self.combo)

    def __call__(self, step: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        pick = (torch.rand(len(self.digit), generator=g) * self.count[self.digit]).long()  # a random one per pair
        x = self.x[self.order[self.first[self.digit] + pick]]
        return paint(x, self.colour), self.ids[self.combo], self.mask[self.combo]


def zero_shot(model: CLIP, d: dict, x: torch.Tensor, y: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """The predicted combination (digit * 6 + colour) of each painted image: its nearest of the 60 captions."""
    return (image_embeddings(model, paint(x, colour)) @ text_embeddings(model, d["ids"], d["mask"]).T).argmax(1)


def linear_probe(model: CLIP, d: dict, s: DigitSettings) -> float:
    """Logistic regression on the frozen image embeddings, trained with labels for all 60 combinations (the
    held-out ones included, painted on training digits), scored on the held-out test images."""
    g = torch.Generator().manual_seed(0)
    per_digit = [torch.nonzero(d["y"] == k)[:, 0] for k in range(10)]
    xs, labels = [], []
    for k in range(10):
        for c in range(len(COLOURS)):
            pick = per_digit[k][torch.randperm(len(per_digit[k]), generator=g)[:s.probe_per_class]]
            xs.append(paint(d["x"][pick], torch.full((len(pick),), c)))
            labels.append(torch.full((len(pick),), k * len(COLOURS) + c))
    feats, labels = image_embeddings(model, torch.cat(xs)), torch.cat(labels)
    probe = torch.nn.Linear(feats.size(1), 10 * len(COLOURS))
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(feats), labels) + 1e-4 * probe.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    colour = held_out(d["y_test"], s.held_out_shift)
    with torch.no_grad():
        pred = probe(image_embeddings(model, paint(d["x_test"], colour))).argmax(1)
    return (pred == d["y_test"] * len(COLOURS) + colour).float().mean().item()


def digit_scores(model: CLIP, d: dict, s: DigitSettings, split: str) -> dict[str, float]:
    x, y = d[f"x_{split}"], d[f"y_{split}"]
    unseen = held_out(y, s.held_out_shift)
    seen = (unseen + 1 + torch.arange(len(y)) % (len(COLOURS) - 1)) % len(COLOURS)  # a fixed allowed colour
    pred = zero_shot(model, d, x, y, unseen)
    return {f"{split}_zero_shot_acc": (pred == y * len(COLOURS) + unseen).float().mean().item(),
            f"{split}_zero_shot_digit_acc": (pred // len(COLOURS) == y).float().mean().item(),
            f"{split}_zero_shot_colour_acc": (pred % len(COLOURS) == unseen).float().mean().item(),
            f"{split}_seen_acc": (zero_shot(model, d, x, y, seen) == y * len(COLOURS) + seen).float().mean().item()}


class ZeroShotDigits(Recipe):
    name = "zero-shot-digits"
    summary = ("CLIP on MNIST painted in 6 colours, captions 'a red seven': zero-shot on 10 colour x digit "
               "pairs never seen, among all 60 captions")
    Settings = DigitSettings
    # measured 0.901 / 0.905 / 0.881 at seeds 0 / 1 / 2 (linear probe 0.924 / 0.916 / 0.894; 80 s of one core)
    milestone = Milestone("test_zero_shot_acc", 0.8, paper="chance 1/60 = 0.017; the linear probe (supervised on "
                          "all 60 pairs) is reported beside it")
    quick = {"epochs": 6}
    # measured 0.640 / 0.758 / 0.672 at seeds 0 / 1 / 2 (28 s of one core each); linear probe 0.77 / 0.81 / 0.74
    quick_milestone = Milestone("test_zero_shot_acc", 0.5, paper="chance 1/60 = 0.017")
    quick_seconds = 28.0
    tiny = {"epochs": 1, "hidden_size": 16, "heads": 2, "vision_layers": 1, "text_layers": 1, "projection_dim": 8,
            "test_limit": 200, "probe_per_class": 4}

    def build(self, s: DigitSettings) -> CLIP:
        return CLIP(config(s, 28, s.context))

    def train(self, model: CLIP, s: DigitSettings, run) -> dict:
        d = digit_data(s.val_size, s.test_limit)
        save_preprocessing(run, 28)
        batches = PaintedBatches(d["x"], d["y"], (d["ids"], d["mask"]), s.held_out_shift, run.seed)
        fit(model, s, batches, run, lambda: digit_scores(model, d, s, "val"), "val_zero_shot_acc", "clip digits")
        return {**digit_scores(model, d, s, "val"), **self.evaluate(model, s), "chance": 1 / 60,
                "parameters": sum(p.numel() for p in model.parameters())}

    def evaluate(self, model: CLIP, s: DigitSettings) -> dict:
        d = digit_data(s.val_size, s.test_limit)
        return {**digit_scores(model, d, s, "test"), "linear_probe_acc": linear_probe(model, d, s)}

    def example(self, s: DigitSettings) -> tuple[torch.Tensor, torch.Tensor]:
        d = digit_data(s.val_size, s.test_limit)
        return d["ids"][:4], paint(d["x_test"][:4], torch.arange(4))

    def figures(self, model: CLIP, s: DigitSettings, run) -> None:
        d = digit_data(s.val_size, s.test_limit)
        y = d["y_test"]
        unseen = held_out(y, s.held_out_shift)
        pred = zero_shot(model, d, d["x_test"], y, unseen)
        digit = np.zeros((10, 10))
        np.add.at(digit, (y.numpy(), (pred // len(COLOURS)).numpy()), 1)
        colour = np.zeros((len(COLOURS), len(COLOURS)))
        np.add.at(colour, (unseen.numpy(), (pred % len(COLOURS)).numpy()), 1)
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        axes[0].imshow(digit / digit.sum(1, keepdims=True), cmap="Blues", vmin=0, vmax=1)
        axes[0].set(title="digit named", xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10))
        axes[1].imshow(colour / colour.sum(1, keepdims=True).clip(1), cmap="Blues", vmin=0, vmax=1)
        axes[1].set(title="colour named", xlabel="predicted", xticks=range(6), yticks=range(6))
        axes[1].set_xticklabels(COLOURS, rotation=45, fontsize=7)
        axes[1].set_yticklabels(COLOURS, fontsize=7)
        show = torch.arange(0, len(y), max(1, len(y) // 10))[:10]
        grid = ((paint(d["x_test"][show], unseen[show]) + 1) / 2).permute(0, 2, 3, 1)  # (10, 28, 28, 3)
        axes[2].imshow(torch.cat(list(grid), dim=1).numpy())
        axes[2].set_title("held-out pairs: " + ", ".join(f"{list(COLOURS)[c]} {DIGITS[k]}" for k, c in
                                                        zip(y[show].tolist(), unseen[show].tolist(), strict=True)
                                                        )[:90], fontsize=7)
        axes[2].axis("off")
        fig.suptitle("zero-shot on colour x digit pairs never seen in training (confusions)", fontsize=10)
        save(fig, run.path("zero_shot_confusion.png"))


RECIPES = [Emoji(), ZeroShotDigits()]
