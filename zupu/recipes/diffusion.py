"""diffusion recipes: a class-conditional DDPM on Fashion-MNIST pixels (`fashion-ddpm`), and text to image by
latent diffusion on the emoji (`emoji-latent`), both with classifier-free guidance and EMA.

Training (Ho et al. 2020, algorithm 1): x_0 a training image in [-1, 1], t ~ U{0..T-1}, eps ~ N(0, I),
minimise |eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, c)|^2; the class c is replaced by a
null label with probability `p_uncond`, so one network learns both the conditional and the unconditional
model that classifier-free guidance mixes. The saved weights are an exponential moving average of the
trained ones (the paper's EMA, decay 0.9999 over 800k steps; shorter here).

Quality is measured, not eyeballed, by a small CNN classifier trained here on the real training images
(deterministically, seed 0, independent of the run): the Frechet distance between its penultimate-layer
features of samples and of real test images (the FID formula, Heusel et al. 2017, with this network in
place of Inception; the matrix square root from an eigendecomposition in float64), beside the same
distance between two disjoint sets of real test images (the floor that sample size allows); the
classifier's accuracy on samples drawn for a given class at guidance 0 and w (guidance must raise it);
and each sample's distance to its nearest training image next to a real test image's (a sample much
closer than that would be a copy).

`emoji-latent` is Stable Diffusion small (Rombach et al. 2022): the 3,786 Noto emoji at 64x64 are encoded once
by the real, pretrained TAEF2 encoder into 32x8x8 latents (kept in zupu's cache); a UNet2DConditionModel-shaped
UNet learns to denoise them, reading through cross-attention the states of a CLIP text encoder that reads the
emoji's names and short names. The CLIP is trained first, here, on the same training split (the CLIP recipe's
`emoji`, fewer epochs; or `clip_run` names a CLIP run to load) and then frozen. The empty caption is the "no
condition" of classifier-free guidance. A tenth of the base emoji (with their skin tones) never reaches the UNet
or the CLIP: their names are the test prompts. Judged like fashion-ddpm, by a classifier trained here on the
real training images, here of the 10 Unicode categories (Smileys & Emotion, Flags, Food & Drink...): the
category accuracy of samples drawn for held-out names at guidance w and 0, the Frechet distance in its features
beside the real-vs-real floor, the CLIP score (cosine of the CLIP's image and text embeddings, beside real
images'), and nearest-training-image distances. The run directory is also the pipeline, in diffusers' layout
(`zupu.sampling.latent.TextToImage`; `zupu draw RUN --prompt TEXT`).
"""

from __future__ import annotations

import functools
import textwrap
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from zupu import data
from zupu.data.transforms import images
from zupu.errors import CheckpointError, SettingError
from zupu.models.diffusion import UNet, UNetConfig
from zupu.recipe import Milestone, Recipe
from zupu.sampling import DDIMScheduler, DDPMScheduler, denoise
from zupu.train import classifier
from zupu.train.batches import TensorBatches
from zupu.train.device import of, to_device
from zupu.train.metrics import accuracy
from zupu.train.optim import make_optimizer, make_schedule
from zupu.train.plots import image_grid, save
from zupu.train.trainer import Trainer

CLASSES = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
NULL = len(CLASSES)  # the "no class" label classifier-free guidance trains with


@dataclass
class Settings:
    image_size: int = 28  # 28: the dataset's own; 14: area-downsampled (the quick run)
    train_size: int = 60000
    channels: tuple[int, ...] = (16, 32, 64)  # one UNet level each; attention on all but the first
    layers_per_block: int = 1
    attention_head_dim: int = 16
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    p_uncond: float = 0.1  # how often the class is dropped in training
    ema_decay: float = 0.999
    guidance: float = 2.0  # w of classifier-free guidance at evaluation
    eval_samples: int = 500  # drawn per evaluation, balanced over the classes
    sample_steps: int = 50  # DDIM steps at evaluation
    ddpm_samples: int = 100  # also drawn with DDPM's 1000 steps, to set DDIM 50 beside it (0: skip)
    classifier_train: int = 20000
    classifier_epochs: int = 3


@functools.lru_cache(maxsize=4)
def _split(split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = data.load("fashion-mnist")[split]
    return images(d.x, size)[:, None] * 2 - 1, torch.from_numpy(d.y).long()


def pixels(split: str, size: int, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST images in [-1, 1], (N, 1, size, size), and labels (N,); a fixed random subset of `limit`.
    Loaded once per process (evaluation reads them again); never modify them in place."""
    x, y = _split(split, size)
    if limit is not None and limit < len(y):
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:limit]
        x, y = x[keep], y[keep]
    return x, y


# The judge: a classifier trained here, and the Frechet distance in its feature space ------------------------


class Judge(nn.Module):
    """A small CNN; `features` is its 64-wide penultimate layer, the space the Frechet distance is taken in."""

    def __init__(self, size: int, channels: int = 1, classes: int = len(CLASSES)):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(32 * (size // 4) ** 2, 64), nn.ReLU())
        self.head = nn.Linear(64, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


@functools.lru_cache(maxsize=2)
def judge(size: int, train: int, epochs: int) -> tuple[Judge, float]:
    """The judge for these settings and its test accuracy; trained once per process, the same in every run."""
    xtr, ytr = pixels("train", size, train)
    xte, yte = pixels("test", size)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = Judge(size)
        opt = make_optimizer("adamw", net.parameters(), 2e-3, weight_decay=0.01)
        classifier.fit_classifier(net, (xtr, ytr), (xte[:1000], yte[:1000]), opt, epochs, 128, seed=0,
                                  eval_every_epochs=epochs, desc="diffusion judge")
    net.eval().requires_grad_(False)
    return net, accuracy(net, xte, yte)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two sets of feature rows, in float64;
    tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric matrix."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(s_a)
    root_a = (v * w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * cross)


def nearest_distance(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each row of x's L2 distance (pixels in [0, 1]) to its nearest row of `reference`."""
    x, reference = (x.flatten(1) + 1) / 2, (reference.flatten(1) + 1) / 2
    return torch.cat([torch.cdist(chunk, reference).min(1).values for chunk in x.split(256)])


# The recipe -------------------------------------------------------------------------------------------------


class EMA:
    """theta_ema <- d theta_ema + (1 - d) theta after each step, d warmed up as min(decay, (1 + n) / (10 + n))
    so that a short run's average is not dominated by its random start."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.model = decay, model
        self.shadow = [p.detach().clone() for p in model.parameters()]

    def __call__(self, step: int, trainer: Trainer) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.model.parameters()], 1 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The average, saved in the resume checkpoint: a resumed run continues the same average."""
        return {str(i): s for i, s in enumerate(self.shadow)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if len(state) != len(self.shadow):
            raise CheckpointError(f"the resume checkpoint holds {len(state)} EMA tensors, the model has "
                                  f"{len(self.shadow)} parameters: start again without --resume")
        with torch.no_grad():
            for i, s in enumerate(self.shadow):
                s.copy_(state[str(i)])

    def copy_to(self, model: nn.Module) -> None:
        with torch.no_grad():
            for p, s in zip(model.parameters(), self.shadow, strict=True):
                p.copy_(s)


class FashionDDPM(Recipe):
    name = "fashion-ddpm"
    summary = "class-conditional DDPM on Fashion-MNIST pixels, classifier-free guidance, EMA; DDIM 50 vs DDPM 1000"
    Settings = Settings
    milestone = Milestone("sample_acc", 0.8, paper="Ho & Salimans (2021): guidance trades diversity for samples "
                          "a classifier recognises; full run, seeds 0 / 1: 0.982 / 0.98 guided, 0.78 / 0.792 unguided")
    quick = {"image_size": 14, "train_size": 20000, "channels": (16, 32), "attention_head_dim": 16, "steps": 400,
             "batch_size": 64, "lr": 2e-3, "warmup": 20, "eval_samples": 200, "sample_steps": 20,
             "ddpm_samples": 0, "classifier_train": 10000, "classifier_epochs": 2}
    # measured at seeds 0 / 1 / 2: 0.905 / 0.825 / 0.89 at w=2, against 0.56 / 0.52 / 0.575 at w=0 (0.665 / 0.695 /
    # 0.665 before DDIM re-derived eps from the clipped x_0)
    quick_milestone = Milestone("sample_acc", 0.6, paper="guided samples of the quick run (14x14), judged by the "
                                "classifier; 0.825-0.905 measured at seeds 0-2")
    quick_seconds = 50.0  # 63 CPU seconds on one thread (process time, loaded machine), imports and figures included
    tiny = {"image_size": 14, "train_size": 512, "channels": (8, 16), "attention_head_dim": 8, "steps": 4,
            "batch_size": 16, "warmup": 0, "eval_samples": 20, "sample_steps": 2, "ddpm_samples": 0,
            "classifier_train": 512, "classifier_epochs": 1}

    def config(self, s: Settings) -> UNetConfig:
        chans = tuple(s.channels)
        down = ("DownBlock2D",) + ("AttnDownBlock2D",) * (len(chans) - 1)
        return UNetConfig(sample_size=s.image_size, in_channels=1, out_channels=1, block_out_channels=chans,
                          down_block_types=down, up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)),
                          layers_per_block=s.layers_per_block, attention_head_dim=s.attention_head_dim,
                          norm_num_groups=min(8, chans[0]), num_class_embeds=len(CLASSES) + 1)

    def build(self, s: Settings) -> UNet:
        return UNet(self.config(s))

    def scheduler(self, s: Settings, ddim: bool = True) -> DDPMScheduler | DDIMScheduler:
        kw = dict(num_train_timesteps=s.num_train_timesteps, beta_schedule=s.beta_schedule)
        return DDIMScheduler(**kw) if ddim else DDPMScheduler(**kw)

    @staticmethod
    def step_kwargs(scheduler: DDPMScheduler | DDIMScheduler) -> dict:
        """DDIM clips x_0 to the pixels' [-1, 1] (diffusers' default) and must then re-derive eps from the clipped
        x_0: guidance pushes x_0 beyond the range, and stepping with the clipped x_0 but the unclipped eps leaves
        x_t off the path, more so the more steps (the quick model: DDIM 50 steps judge accuracy 0.24 -> 0.90)."""
        return {"use_clipped_model_output": True} if isinstance(scheduler, DDIMScheduler) else {}

    def train(self, model: UNet, s: Settings, run) -> dict:
        x, y = pixels("train", s.image_size, s.train_size)
        sched = self.scheduler(s, ddim=False)
        base = TensorBatches(x, y, batch_size=s.batch_size, seed=run.seed)

        def batches(step: int) -> tuple[torch.Tensor, ...]:
            # the noise, timesteps and dropped labels are drawn from the step's own generator: --resume stays exact
            x0, labels = base(step)
            g = torch.Generator().manual_seed(run.seed * 1_000_003 + step)
            t = torch.randint(0, s.num_train_timesteps, (len(x0),), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            drop = torch.rand(len(x0), generator=g) < s.p_uncond
            return sched.add_noise(x0, noise, t), t, labels.masked_fill(drop, NULL), noise

        def step(batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
            xt, t, labels, noise = batch
            return {"loss": F.mse_loss(model(xt, t, class_labels=labels), noise)}

        opt = make_optimizer("adamw", model.parameters(), s.lr, weight_decay=0.0)
        ema = EMA(model, s.ema_decay)
        Trainer(model, step, batches, opt, s.steps, run=run, scheduler=make_schedule(opt, "cosine", s.steps, s.warmup),
                log_every=max(1, s.steps // 40), grad_clip=1.0, callbacks=(ema,), desc="diffusion").fit()
        ema.copy_to(model)
        return {**self.evaluate(model, s), "parameters": sum(p.numel() for p in model.parameters())}

    def draw(self, model: UNet, s: Settings, labels: torch.Tensor, guidance: float, seed: int = 1234,
             ddim: bool = True, steps: int | None = None, trajectory: list | None = None) -> torch.Tensor:
        """Samples in [-1, 1] for `labels`, from a fixed seed."""
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(len(labels), 1, s.image_size, s.image_size, generator=g)  # on the host: any device
        noise, labels = to_device((noise, labels), of(model))  # draws the same samples from a seed
        with torch.no_grad():
            sched = self.scheduler(s, ddim)
            out = denoise(model, sched, noise, steps or (s.sample_steps if ddim else s.num_train_timesteps),
                          labels=labels, null_label=NULL, guidance=guidance, generator=g, trajectory=trajectory,
                          step_kwargs=self.step_kwargs(sched))
        return out.clamp(-1, 1).cpu()  # judged on the host

    def evaluate(self, model: UNet, s: Settings) -> dict:
        model.eval()
        net, judge_acc = judge(s.image_size, s.classifier_train, s.classifier_epochs)
        xte, _ = pixels("test", s.image_size)
        xtr, _ = pixels("train", s.image_size, s.train_size)
        n = min(s.eval_samples, len(xte) // 2)
        labels = torch.arange(n) % len(CLASSES)
        guided, plain = self.draw(model, s, labels, s.guidance), self.draw(model, s, labels, 0.0)
        real = net.features(xte[:n])
        out = {
            "fd": frechet_distance(net.features(guided), real),
            "fd_w0": frechet_distance(net.features(plain), real),
            "fd_floor": frechet_distance(net.features(xte[n:2 * n]), real),
            "sample_acc": accuracy(net, guided, labels),
            "sample_acc_w0": accuracy(net, plain, labels),
            "judge_test_acc": judge_acc,
            "nearest_train_samples": float(nearest_distance(guided, xtr).mean()),
            "nearest_train_test": float(nearest_distance(xte[:n], xtr).mean()),
        }
        if s.ddpm_samples:  # the same labels and noise seed through DDPM's 1000 steps and DDIM's few
            m = min(s.ddpm_samples, n)
            ddpm = self.draw(model, s, labels[:m], s.guidance, ddim=False)
            out["fd_ddpm_1000"] = frechet_distance(net.features(ddpm), real[:m])
            out["fd_ddim_same_n"] = frechet_distance(net.features(guided[:m]), real[:m])
        return out

    def example(self, s: Settings) -> tuple:
        x, y = pixels("test", s.image_size, 4)
        return x, torch.tensor([10, 200, 500, 900]), None, y

    def figures(self, model: UNet, s: Settings, run) -> None:
        model.eval()
        labels = torch.arange(len(CLASSES)).repeat_interleave(6)
        grid = self.draw(model, s, labels, s.guidance)
        image_grid([im[0].numpy() for im in grid], run.path("samples.png"), cols=12, cmap="gray", symmetric=False,
                   titles=[CLASSES[i] if j % 6 == 0 else "" for j, i in enumerate(labels.tolist())],
                   suptitle=f"DDIM {s.sample_steps} steps, guidance w={s.guidance}")
        trajectory: list[torch.Tensor] = []
        self.draw(model, s, torch.arange(len(CLASSES)), s.guidance, trajectory=trajectory)
        picks = sorted({round(i * (len(trajectory) - 1) / 7) for i in range(8)})
        image_grid([trajectory[k][c, 0].clamp(-1, 1).numpy() for c in range(len(CLASSES)) for k in picks],
                   run.path("trajectory.png"), cols=len(picks), cmap="gray", symmetric=False,
                   suptitle="the model's estimate of x_0 along the denoising steps (left: pure noise)")
        sweep = (0.0, 1.0, 2.0, 4.0, 8.0)
        rows = [self.draw(model, s, torch.arange(len(CLASSES)), w, seed=7) for w in sweep]
        fig, axes = plt.subplots(len(sweep), len(CLASSES), figsize=(len(CLASSES), len(sweep) * 1.05), squeeze=False)
        for r, (w, row) in enumerate(zip(sweep, rows, strict=True)):
            for c in range(len(CLASSES)):
                axes[r, c].imshow(row[c, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
                axes[r, c].set_xticks([])
                axes[r, c].set_yticks([])
                if r == 0:
                    axes[r, c].set_title(CLASSES[c], fontsize=7)
            axes[r, 0].set_ylabel(f"w={w:g}", fontsize=8)
        fig.suptitle("classifier-free guidance sweep (same noise per column)", fontsize=9)
        save(fig, run.path("guidance.png"))


# Text to image: latent diffusion on the emoji --------------------------------------------------------------


@functools.cache
def emoji_subset(limit: int) -> torch.Tensor:
    """The emoji a run uses: all of them (limit 0), or `limit` of a fixed shuffle, in the dataset's order."""
    n = len(data.load("emoji-noto-64").names)
    if not limit or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:limit].sort().values


@functools.cache
def emoji_latents(limit: int, weights: str = "taef2") -> torch.Tensor:
    """The emoji of `emoji_subset(limit)` (64x64 RGB on white) through the real TAEF2 encoder: (N, 32, 8, 8).
    Encoded once (25 ms an emoji on one core: 94 s for all of them) and kept in zupu's cache, under a name that
    is the digest of the encoder's weights and the images, so a changed file is never read stale."""
    import hashlib

    from zupu.checkpoint import load_state, save_state
    from zupu.data.download import cache_dir
    from zupu.hf.diffusion import load_taesd
    from zupu.progress import progress
    from zupu.weights import fetch

    pixels = data.load("emoji-noto-64").images[emoji_subset(limit).numpy()]  # (N, 64, 64, 3) uint8
    h = hashlib.sha256((fetch(weights) / f"{weights}_encoder.pth").read_bytes())
    h.update(pixels.tobytes())
    path = cache_dir() / "latents" / f"{weights}-emoji-noto-64-{h.hexdigest()[:16]}.safetensors"
    if path.is_file():
        return load_state(path)["latents"]
    vae = load_taesd(name=weights)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)  # (N, 3, 64, 64)
    with torch.no_grad():
        z = torch.cat([vae.encode(x[i:i + 64].float() / 255) for i in
                       progress(iterable=range(0, len(x), 64), desc=f"{weights} latents", unit="batch")])
    save_state({"latents": z.contiguous()}, path)  # atomic: a crash leaves no half file
    return z


@dataclass
class EmojiLatentSettings:
    channels: tuple[int, ...] = (64, 128)  # one UNet level each, on the 8x8 latents (8 -> 4)
    layers_per_block: int = 1
    heads: int = 4  # attention heads per Transformer block
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"  # Stable Diffusion's
    steps: int = 6000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    p_uncond: float = 0.1  # how often the caption is replaced by the empty one in training
    ema_decay: float = 0.999
    guidance: float = 3.0  # w of classifier-free guidance at evaluation
    sample_steps: int = 50  # DDIM steps at evaluation
    eval_samples: int = 356  # held-out names drawn (each once), at most the test split
    emoji_limit: int = 0  # 0: all 3,786 emoji; else a fixed subset (the tiny run)
    clip_run: str = ""  # a `zupu train clip --recipe emoji` run to read the text with; "" trains one here
    clip_epochs: int = 20  # the CLIP trained here (seed 0, the same in every run of these settings)
    clip_hidden: int = 64
    clip_layers: int = 2
    judge_epochs: int = 10  # the category classifier that judges the samples


def _clip_settings(clip: tuple[int, int, int]):
    """The CLIP recipe's emoji settings for (epochs, width, layers)."""
    from zupu.recipes.clip import EmojiSettings

    epochs, hidden, layers = clip
    return EmojiSettings(epochs=epochs, hidden_size=hidden, heads=max(1, hidden // 16), vision_layers=layers,
                         text_layers=layers, projection_dim=hidden)


def _clip_key(s: EmojiLatentSettings) -> tuple[int, int, int]:
    return s.clip_epochs, s.clip_hidden, s.clip_layers


@functools.lru_cache(maxsize=2)
def emoji_clip(clip_run: str, clip: tuple[int, int, int]) -> tuple[nn.Module, int, int]:
    """The frozen CLIP whose text encoder conditions the UNet, its context and image size: loaded from
    `clip_run`, or trained here on the emoji's training split (deterministically: seed 0)."""
    from zupu.checkpoint import from_pretrained
    from zupu.models.clip import CLIP
    from zupu.recipes import clip as clip_recipes

    if clip_run:
        model = from_pretrained(clip_run)
        if not isinstance(model, CLIP):
            raise SettingError(f"clip_run {clip_run} holds a {type(model).__name__}, not a CLIP: give a run of "
                               "`zupu train clip --recipe emoji`")
    else:
        clip_settings = _clip_settings(clip)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = CLIP(clip_recipes.config(clip_settings, clip_settings.image_size, clip_settings.context))
            clip_recipes.fit_emoji(model, clip_settings, None, 0)
    model.eval().requires_grad_(False)
    return model, model.config.text_config.max_position_embeddings, model.config.vision_config.image_size


@functools.lru_cache(maxsize=2)
def _emoji_setup(clip_run: str, clip_key: tuple[int, int, int], limit: int) -> dict:
    from zupu.recipes.clip import emoji_data

    clip, context, clip_size = emoji_clip(clip_run, clip_key)
    clip_settings = _clip_settings(clip_key)
    d = emoji_data(clip_size, context, clip_settings.test_fraction, clip_settings.val_fraction,
                   clip_settings.split_seed)
    keep = emoji_subset(limit)
    where = torch.full((len(d["captions"]),), -1)
    where[keep] = torch.arange(len(keep))
    splits = {k: where[d[k]][where[d[k]] >= 0] for k in ("train", "val", "test")}  # rows of the subset
    z = emoji_latents(limit)
    tr = splits["train"]
    mean, std = z[tr].mean((0, 2, 3)), z[tr].std((0, 2, 3))  # per channel, on the training split only
    ids, mask = d["ids"][keep], d["mask"][keep]
    with torch.no_grad():
        states = torch.cat([clip.text_model(ids[i:i + 512], mask[i:i + 512]) for i in range(0, len(ids), 512)])
    e = data.load("emoji-noto-64")
    names = sorted(set(e.categories))
    rgb = torch.from_numpy(e.images[keep.numpy()]).permute(0, 3, 1, 2).float() / 255  # (N, 3, 64, 64)
    return {"clip": clip, "context": context, "clip_size": clip_size, **splits,
            "captions": [d["captions"][i] for i in keep.tolist()], "ids": ids, "mask": mask, "states": states,
            "latents": (z - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1), "mean": mean, "std": std,
            "small": F.interpolate(rgb, size=32, mode="area") * 2 - 1,  # (N, 3, 32, 32) what the judge sees
            "categories": names, "category": torch.tensor([names.index(c) for c in
                                                           (e.categories[i] for i in keep.tolist())])}


def emoji_setup(s: EmojiLatentSettings) -> dict:
    """Everything a run reads, computed once per process: the CLIP, the data's splits (by base emoji, the
    CLIP recipe's), standardised latents, the captions' text states, the images at 32px and their categories."""
    return _emoji_setup(s.clip_run, _clip_key(s), s.emoji_limit)


@functools.lru_cache(maxsize=2)
def emoji_judge(clip_run: str, clip_key: tuple[int, int, int], limit: int, epochs: int) -> tuple[Judge, float]:
    """A category classifier (10 Unicode categories) on the real 32px training emoji, and its accuracy on the
    held-out ones; trained once per process, the same in every run."""
    e = _emoji_setup(clip_run, clip_key, limit)
    x, y = e["small"], e["category"]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = Judge(32, 3, len(e["categories"]))
        opt = make_optimizer("adamw", net.parameters(), 2e-3, weight_decay=0.01)
        classifier.fit_classifier(net, (x[e["train"]], y[e["train"]]), (x[e["val"]], y[e["val"]]), opt, epochs, 64,
                                  seed=0, eval_every_epochs=epochs, desc="emoji judge")
    net.eval().requires_grad_(False)
    return net, accuracy(net, x[e["test"]], y[e["test"]])


@functools.cache
def _taef2():
    from zupu.hf.diffusion import load_taesd

    return load_taesd()


class EmojiLatent(Recipe):
    name = "emoji-latent"
    summary = ("text to image: latent diffusion on the Noto emoji's names, real TAEF2 latents, a cross-attention "
               "UNet reading a frozen CLIP text encoder trained here, classifier-free guidance, EMA, DDIM")
    Settings = EmojiLatentSettings
    milestone = Milestone("clip_score", 0.4, paper="Rombach et al. 2022 (latent diffusion); the cosine of the CLIP "
                          "trained here between a sample and its held-out name; seeds 0 / 1 / 2: 0.518 / 0.483 / "
                          "0.431 at w=3, 0.154 / 0.151 / 0.094 unguided, real images 0.523")
    # the full run, seeds 0 / 1 / 2 (2,513 s on 2 threads at seed 0, 3,926 s on one at seed 2): category accuracy
    # 0.59 / 0.55 / 0.54 at w=3 vs 0.37 / 0.37 / 0.32 unguided (judge 0.79 on real images); FD 38 / 54 / 57 vs 109 /
    # 106 / 141, beside 68-70 for real validation emoji vs the test ones (different emoji: samples drawn for the test
    # names themselves can come under it); nearest training image 9.8 / 9.3 / 9.2 vs 8.5 for real test images.
    # Its samples are rough figures, faces and objects in the names' colours: some recognisable, many not.
    quick = {"channels": (32, 64), "steps": 800, "clip_epochs": 4, "eval_samples": 100, "sample_steps": 20,
             "judge_epochs": 4}
    # seeds 0 / 1 / 2, DDIM's x_0 clipped to +-3: clip_score 0.384 / 0.437 / 0.446 at w=3 against 0.272 / 0.316 /
    # 0.313 unguided and 0.468 for the real images; category accuracy 0.20 / 0.23 / 0.34 vs 0.13 / 0.15 / 0.18
    # (judge 0.79 on real images); FD 75 / 71 / 51 vs 95 / 95 / 86, floor 46; nearest training image 14.4-15.1 vs
    # 9.4 for real test images. (Seed 0 clipped to +-1: 0.328 / 0.278, 0.19 / 0.16, FD 211 / 221.) The samples are
    # patchy colour fields that follow skin tones and palettes, far from converged: on 96 emoji the same UNet ends
    # at loss 0.39 after 800 steps and draws faces and figures at 0.11 after 4,000 (its size is not tested apart).
    quick_milestone = Milestone("clip_score", 0.3, paper="held-out names; real images 0.47, unguided samples "
                                "0.27-0.32 (seeds 0-2)")
    # 261-270 CPU seconds on one thread (user, seeds 0-2, CLIP and judge included; the TAEF2 latents, 94 s once,
    # cached): over what the quick tour's budget has left, so the tour leaves it out
    quick_seconds = 270.0
    in_tour = False
    tiny = {"channels": (16, 32), "heads": 2, "steps": 4, "batch_size": 16, "warmup": 0, "eval_samples": 8,
            "sample_steps": 2, "emoji_limit": 96, "clip_epochs": 1, "clip_hidden": 16, "clip_layers": 1,
            "judge_epochs": 1}

    def config(self, s: EmojiLatentSettings, d_text: int) -> UNetConfig:
        chans = tuple(s.channels)
        return UNetConfig(sample_size=8, in_channels=32, out_channels=32, block_out_channels=chans,
                          down_block_types=("CrossAttnDownBlock2D",) * len(chans),
                          up_block_types=("CrossAttnUpBlock2D",) * len(chans), mid_block_type="UNetMidBlock2DCrossAttn",
                          layers_per_block=s.layers_per_block, attention_head_dim=s.heads, cross_attention_dim=d_text,
                          norm_num_groups=min(32, chans[0] // 2))

    def build(self, s: EmojiLatentSettings) -> UNet:
        return UNet(self.config(s, emoji_setup(s)["clip"].config.text_config.hidden_size))

    def scheduler(self, s: EmojiLatentSettings) -> DDIMScheduler:
        # x_0 clipped to +-3, not diffusers' +-1 (meant for pixels): standardised latents have unit spread, 30%
        # of them beyond +-1 (0.3% beyond +-3). Chosen on validation names with the quick model: +-1 FD 211 (test
        # names), +-2 155, +-3 104, unclipped 132 (CLIP score 0.32 / 0.35 / 0.16 for +-2 / +-3 / unclipped)
        return DDIMScheduler(num_train_timesteps=s.num_train_timesteps, beta_schedule=s.beta_schedule,
                             clip_sample_range=3.0)

    def pipeline(self, model: UNet, s: EmojiLatentSettings):
        from zupu.sampling.latent import TextToImage
        from zupu.tokenizers.clip import CLIPTokenizer

        e = emoji_setup(s)
        return TextToImage(model.eval(), e["clip"].text_model, CLIPTokenizer.openai(), e["context"],
                           self.scheduler(s).save_config(), _taef2(), e["mean"], e["std"])

    def train(self, model: UNet, s: EmojiLatentSettings, run) -> dict:
        e = emoji_setup(s)
        tr = e["train"]
        sched = self.scheduler(s)
        null = self.pipeline(model, s).encode_text([""])
        base = TensorBatches(e["latents"][tr], e["states"][tr], e["mask"][tr], batch_size=s.batch_size, seed=run.seed)

        def batches(step: int) -> tuple[torch.Tensor, ...]:
            # noise, timesteps and dropped captions come from the step's own generator: --resume stays exact
            z0, states, mask = base(step)
            g = torch.Generator().manual_seed(run.seed * 1_000_003 + step)
            t = torch.randint(0, s.num_train_timesteps, (len(z0),), generator=g)
            noise = torch.randn(z0.shape, generator=g)
            drop = torch.rand(len(z0), generator=g) < s.p_uncond
            states = torch.where(drop[:, None, None], null[0], states)
            mask = torch.where(drop[:, None], null[1], mask)
            return sched.add_noise(z0, noise, t), t, states, mask, noise

        def step(batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
            zt, t, states, mask, noise = batch
            return {"loss": F.mse_loss(model(zt, t, states, encoder_attention_mask=mask), noise)}

        opt = make_optimizer("adamw", model.parameters(), s.lr, weight_decay=0.0)
        ema = EMA(model, s.ema_decay)
        Trainer(model, step, batches, opt, s.steps, run=run, scheduler=make_schedule(opt, "cosine", s.steps, s.warmup),
                log_every=max(1, s.steps // 40), grad_clip=1.0, callbacks=(ema,), desc="diffusion emoji").fit()
        ema.copy_to(model)
        self.pipeline(model, s).save(run.out, e["clip"], run.meta)
        return {**self.evaluate(model, s), "parameters": sum(p.numel() for p in model.parameters()),
                "train_emoji": len(tr), "test_emoji": len(e["test"])}

    def draw(self, model: UNet, s: EmojiLatentSettings, rows: torch.Tensor, guidance: float, seed: int = 1234,
             trajectory: list | None = None) -> torch.Tensor:
        """Images (B, 3, 64, 64) in [0, 1] for the captions of `rows`, from a fixed seed."""
        e = emoji_setup(s)
        pipe = self.pipeline(model, s)
        z = pipe.latents([], s.sample_steps, guidance, seed, states=(e["states"][rows], e["mask"][rows]),
                         trajectory=trajectory)
        return pipe.decode(z)

    def evaluate(self, model: UNet, s: EmojiLatentSettings) -> dict:
        from zupu.recipes.clip import image_embeddings, text_embeddings

        model.eval()
        e = emoji_setup(s)
        net, judge_acc = emoji_judge(s.clip_run, _clip_key(s), s.emoji_limit, s.judge_epochs)
        test = e["test"][:min(s.eval_samples, len(e["test"]), len(e["val"]))]
        n = len(test)
        real = net.features(e["small"][test])
        out = {"judge_test_acc": judge_acc, "fd_floor": frechet_distance(net.features(e["small"][e["val"][:n]]), real),
               "nearest_train_test": float(nearest_distance(e["small"][test], e["small"][e["train"]]).mean())}
        texts = text_embeddings(e["clip"], e["ids"][test], e["mask"][test])
        size = e["clip_size"]
        out["clip_score_real"] = float((image_embeddings(e["clip"], F.interpolate(e["small"][test], size=size,
                                                                                  mode="area")) * texts).sum(1).mean())
        for w, tag in ((s.guidance, ""), (0.0, "_w0")):
            small = F.interpolate(self.draw(model, s, test, w), size=32, mode="area") * 2 - 1  # (n, 3, 32, 32)
            out["fd" + tag] = frechet_distance(net.features(small), real)
            out["sample_category_acc" + tag] = accuracy(net, small, e["category"][test])
            images = F.interpolate(small, size=size, mode="area") if size != 32 else small
            out["clip_score" + tag] = float((image_embeddings(e["clip"], images) * texts).sum(1).mean())
            if not tag:
                out["nearest_train_samples"] = float(nearest_distance(small, e["small"][e["train"]]).mean())
        return out

    def example(self, s: EmojiLatentSettings) -> tuple:
        e = emoji_setup(s)
        return e["latents"][:4], torch.tensor([10, 200, 500, 900]), e["states"][:4], None, e["mask"][:4]

    def figures(self, model: UNet, s: EmojiLatentSettings, run) -> None:
        e = emoji_setup(s)
        model.eval()
        picks = e["test"][torch.linspace(0, len(e["test"]) - 1, 8).long()]
        shown = torch.cat([picks, e["train"][torch.linspace(0, len(e["train"]) - 1, 4).long()]])
        real = (e["small"][shown] + 1) / 2
        grid = self.draw(model, s, shown, s.guidance)
        titles = [textwrap.shorten(e["captions"][i], 18, placeholder="..") for i in shown.tolist()]
        _rgb_rows([real, grid], run.path("samples.png"), titles, ["real", f"w={s.guidance:g}"],
                  f"held-out names (left 8) and training names (right 4): DDIM {s.sample_steps} steps")
        trajectory: list[torch.Tensor] = []
        self.draw(model, s, picks[:4], s.guidance, trajectory=trajectory)
        pipe = self.pipeline(model, s)
        steps = sorted({round(i * (len(trajectory) - 1) / 7) for i in range(8)})
        rows = [pipe.decode(trajectory[k]) for k in steps]  # each (4, 3, 64, 64)
        _rgb_rows([torch.stack([r[c] for r in rows]) for c in range(4)], run.path("trajectory.png"),
                  [f"step {k + 1}" for k in steps], [textwrap.shorten(e["captions"][i], 14, placeholder="..")
                                                     for i in picks[:4].tolist()],
                  "the model's estimate of x_0 along the DDIM steps, decoded by TAEF2")
        sweep = (0.0, 1.0, 3.0, 6.0)
        _rgb_rows([self.draw(model, s, picks, w, seed=7) for w in sweep], run.path("guidance.png"),
                  [textwrap.shorten(e["captions"][i], 18, placeholder="..") for i in picks.tolist()],
                  [f"w={w:g}" for w in sweep], "classifier-free guidance sweep (same noise per column)")
        init = torch.from_numpy(data.load("emoji-noto-64").images[emoji_subset(s.emoji_limit)[picks[:4]].numpy()])
        init = init.permute(0, 3, 1, 2).float() / 255  # (4, 3, 64, 64)
        hole = torch.zeros(1, 1, 64, 64)
        hole[..., 16:48, 16:48] = 1
        prompts = [e["captions"][i] for i in picks[:4].tolist()]
        inpainted = pipe(prompts, s.sample_steps, s.guidance, seed=3, init=init, mask=hole)
        canvas = torch.ones(4, 3, 96, 96)
        canvas[..., 16:80, 16:80] = init
        outside = torch.ones(1, 1, 96, 96)
        outside[..., 16:80, 16:80] = 0
        outpainted = pipe(prompts, s.sample_steps, s.guidance, seed=3, init=canvas, mask=outside)
        holed = init * (1 - hole) + hole * 0.5
        _rgb_rows([holed, inpainted, F.interpolate(outpainted, size=64, mode="area")], run.path("inpainting.png"),
                  [textwrap.shorten(p, 18, placeholder="..") for p in prompts],
                  ["masked", "inpainted", "outpainted"],
                  "inpainting (the grey square redrawn) and outpainting (a 16px border drawn around the emoji)")


def _rgb_rows(rows: list[torch.Tensor], path, col_titles: list[str], row_titles: list[str], suptitle: str) -> None:
    """Rows of RGB images (each (K, 3, H, W) in [0, 1]) in one figure."""
    k = len(rows[0])
    fig, axes = plt.subplots(len(rows), k, figsize=(k * 1.1, len(rows) * 1.2), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(k):
            axes[r, c].imshow(row[c].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0 and c < len(col_titles):
                axes[r, c].set_title(col_titles[c], fontsize=6)
        axes[r, 0].set_ylabel(row_titles[r], fontsize=7)
    fig.suptitle(suptitle, fontsize=8)
    save(fig, path)


RECIPES = [FashionDDPM(), EmojiLatent()]
