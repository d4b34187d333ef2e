"""diffusion recipe: a class-conditional DDPM on Fashion-MNIST pixels, with classifier-free guidance and EMA.

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
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from zupu import data
from zupu.data.transforms import images
from zupu.models.diffusion import UNet, UNetConfig
from zupu.recipe import Milestone, Recipe
from zupu.sampling import DDIMScheduler, DDPMScheduler, denoise
from zupu.train import classifier
from zupu.train.batches import TensorBatches
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

    def __init__(self, size: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(32 * (size // 4) ** 2, 64), nn.ReLU())
        self.head = nn.Linear(64, len(CLASSES))

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

    def copy_to(self, model: nn.Module) -> None:
        with torch.no_grad():
            for p, s in zip(model.parameters(), self.shadow, strict=True):
                p.copy_(s)


class FashionDDPM(Recipe):
    name = "fashion-ddpm"
    summary = "class-conditional DDPM on Fashion-MNIST pixels, classifier-free guidance, EMA; DDIM 50 vs DDPM 1000"
    Settings = Settings
    milestone = Milestone("sample_acc", 0.8, paper="Ho & Salimans (2021): guidance trades diversity for samples "
                          "a classifier recognises; the full run's target, not yet measured here")
    quick = {"image_size": 14, "train_size": 20000, "channels": (16, 32), "attention_head_dim": 16, "steps": 400,
             "batch_size": 64, "lr": 2e-3, "warmup": 20, "eval_samples": 200, "sample_steps": 20,
             "ddpm_samples": 0, "classifier_train": 10000, "classifier_epochs": 2}
    # measured at seeds 0 / 1 / 2: 0.665 / 0.695 / 0.665 at w=2, against 0.59 / 0.525 / 0.525 at w=0
    quick_milestone = Milestone("sample_acc", 0.6, paper="guided samples of the quick run (14x14), judged by the "
                                "classifier; 0.67-0.70 measured at seeds 0-2")
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
        noise = torch.randn(len(labels), 1, s.image_size, s.image_size, generator=g)
        with torch.no_grad():
            out = denoise(model, self.scheduler(s, ddim), noise, steps or (s.sample_steps if ddim else
                          s.num_train_timesteps), labels=labels, null_label=NULL, guidance=guidance, generator=g,
                          trajectory=trajectory)
        return out.clamp(-1, 1)

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


RECIPES = [FashionDDPM()]
