"""`zupu draw RUN`: images from a trained diffusion or DALL-E run, written as a PNG grid.

    zupu draw runs/diffusion --label sneaker --guidance 3 --steps 50 --seed 1 --n 8
    zupu draw runs/diffusion --prompt "ankle boot"                      # a class name
    zupu draw runs/diffusion --label bag --init shoe.png --strength 0.6  # image-to-image
    zupu draw runs/diffusion --label shirt --init coat.png --mask sleeves.png   # inpaint: white = redraw
    zupu draw runs/emoji --prompt "smiling cat face with heart eyes"    # text to image (emoji-latent)
    zupu draw runs/emoji --prompt "a red apple" --init apple.png --outpaint 16   # draw a 16px border around it

    zupu draw runs/dalle --prompt "a red seven" --samples 8 --rerank   # DALL-E: best first by its CLIP

The run's recipe gives the image size, the classes and the noise schedule; sampling is DDIM
(`zupu.sampling.denoise`) with classifier-free guidance w. An init image or mask must be a PNG of the
run's size, grayscale for a pixel model (fashion-ddpm), RGB for a text-to-image one (its mask grayscale);
the mask's white pixels are redrawn, its black ones kept.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zupu.errors import SettingError, did_you_mean

if TYPE_CHECKING:
    import torch


def _image(path: str, size: int, what: str, mode: str = "L") -> torch.Tensor:
    """A PNG of size x size in `mode` (L: grayscale, RGB) -> (1, C, size, size) in [0, 1]."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
    except FileNotFoundError:
        raise SettingError(f"{what} {path} does not exist") from None
    except UnidentifiedImageError:
        raise SettingError(f"{what} {path} is not an image PIL can read") from None
    if im.mode not in ((mode, "1") if mode == "L" else (mode,)):
        kind = "grayscale" if mode == "L" else mode
        raise SettingError(f"{what} {path} is mode {im.mode}; {kind} is wanted here: convert it to mode {mode} "
                           f"(e.g. PIL's Image.convert({mode!r}))")
    if im.size != (size, size):
        raise SettingError(f"{what} {path} is {im.size[0]}x{im.size[1]}; this model draws {size}x{size} images: "
                           "resize it first")
    pixels = torch.from_numpy(np.asarray(im.convert(mode), dtype=np.float32) / 255.0)
    return pixels[None, None] if mode == "L" else pixels.permute(2, 0, 1)[None]  # (1, C, size, size)


def label_of(text: str, classes: tuple[str, ...]) -> int:
    """A class index or name (case-insensitive; a prompt that names one class, e.g. "an ankle boot")."""
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    lowered = text.lower()
    named = [i for i, c in enumerate(classes) if c.lower() == lowered or c.lower() in lowered.split()]
    if len(named) == 1:
        return named[0]
    hint = did_you_mean(lowered, [c.lower() for c in classes])
    raise SettingError(f"{text!r} names none of this model's classes{hint}"
                       f" (classes: {', '.join(classes)}, or 0-{len(classes) - 1})")


def draw_text(run: str | Path, prompt: str | None, steps: int = 50, guidance: float = 3.0, seed: int = 0,
              n: int = 8, init: str | None = None, strength: float = 0.7, mask: str | None = None,
              outpaint: int = 0, device: str = "cpu") -> torch.Tensor:
    """(n, 3, H, W) images in [0, 1] (on the host) from a text-to-image pipeline folder (an emoji-latent run),
    drawn on `device`."""
    import torch

    from zupu.sampling.latent import TextToImage
    from zupu.train.device import resolve

    if not prompt:
        raise SettingError("this model draws from text: give --prompt TEXT")
    if outpaint < 0:
        raise SettingError(f"--outpaint must be >= 0 pixels, got {outpaint}")
    pipe = TextToImage.load(run)
    where = resolve(device)
    for part in (pipe.unet, pipe.text_model, pipe.vae):
        part.to(where)
    size = pipe.size
    x0 = _image(init, size, "--init image", "RGB") if init else None
    keep = (_image(mask, size, "--mask") > 0.5).float() if mask else None
    if (keep is not None or outpaint) and x0 is None:
        raise SettingError("--mask and --outpaint need --init: the image whose pixels are kept")
    if outpaint:
        if keep is not None:
            raise SettingError("give --mask (inpaint) or --outpaint (draw around the image), not both")
        side = size + 2 * outpaint
        canvas, keep = torch.ones(1, 3, side, side), torch.ones(1, 1, side, side)
        canvas[..., outpaint:outpaint + size, outpaint:outpaint + size] = x0
        keep[..., outpaint:outpaint + size, outpaint:outpaint + size] = 0
        x0 = canvas
    return pipe([prompt] * n, steps, guidance, seed, init=x0, strength=strength, mask=keep).cpu()


def draw(run: str | Path, label: str | None = None, steps: int = 50, guidance: float = 2.0, seed: int = 0,
         n: int = 8, init: str | None = None, strength: float = 0.7, mask: str | None = None,
         outpaint: int = 0, device: str = "cpu") -> torch.Tensor:
    """(n, C, H, W) images in [0, 1] (on the host) from run directory `run`, drawn on `device`; `label` is the
    prompt of a text-to-image run."""
    import torch

    from zupu import registry
    from zupu.checkpoint import from_pretrained, read_config
    from zupu.sampling import denoise
    from zupu.train.device import resolve, to_device

    if steps < 1:
        raise SettingError(f"--steps must be at least 1, got {steps}")
    if guidance < 0:
        raise SettingError(f"--guidance must be >= 0 (0: the plain conditional model), got {guidance}")
    if n < 1:
        raise SettingError(f"--n must be at least 1, got {n}")
    if (Path(run) / "model_index.json").is_file():  # a text-to-image pipeline (emoji-latent)
        return draw_text(run, label, steps, guidance, seed, n, init, strength, mask, outpaint, device)
    entry: dict[str, Any] = read_config(run).get("zupu") or {}
    if entry.get("member") != "diffusion":
        raise SettingError(f"{run} is not a diffusion run (its config.json names member {entry.get('member')!r}); "
                           "train one with `zupu train diffusion`")
    if outpaint:
        raise SettingError("--outpaint is for a text-to-image run (emoji-latent): this model draws a fixed size")
    recipe = registry.get("diffusion").recipe(entry.get("recipe"))
    s = recipe.settings(overrides=entry.get("settings"))
    from zupu.recipes.diffusion import CLASSES, NULL

    size = s.image_size
    x0 = _image(init, size, "--init image") * 2 - 1 if init else None
    keep = _image(mask, size, "--mask") if mask else None
    if keep is not None:
        if x0 is None:
            raise SettingError("--mask needs --init: the image whose unmasked pixels are kept")
        keep = (keep > 0.5).float()
    where = resolve(device)
    model = from_pretrained(run).to(where)
    labels = torch.full((n,), label_of(label, CLASSES) if label is not None else 0, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 1, size, size, generator=g)  # on the host: a seed draws the same on every device
    noise, labels, x0, keep = to_device((noise, labels, x0, keep), where)
    with torch.no_grad():
        sched = recipe.scheduler(s)
        out = denoise(model, sched, noise, steps, labels=labels, null_label=NULL, guidance=guidance,
                      generator=g, init=None if x0 is None else x0.expand(n, -1, -1, -1),
                      strength=strength if x0 is not None and keep is None else 1.0, mask=keep, desc="draw",
                      step_kwargs=recipe.step_kwargs(sched))
    return ((out.clamp(-1, 1) + 1) / 2).cpu()


def draw_dalle(run: str | Path, prompt: str | None, n: int = 8, seed: int = 0, rerank: bool = False,
               top_k: int | None = None, device: str = "cpu") -> torch.Tensor:
    """(n, 3, H, W) images in [0, 1] (on the host) drawn on `device` by a DALL-E run from `prompt`, CLIP's best
    first with `rerank`."""
    import torch

    from zupu.checkpoint import from_pretrained, read_config
    from zupu.recipes import dalle
    from zupu.train.device import resolve

    if prompt is None:
        raise SettingError("a DALL-E run draws from a caption: give --prompt, e.g. --prompt 'a red seven'")
    if n < 1:
        raise SettingError(f"--samples must be at least 1, got {n}")
    entry: dict[str, Any] = read_config(run).get("zupu") or {}
    s = dalle.RECIPES[0].settings(overrides=entry.get("settings"))
    text = dalle.encode_captions([prompt], s.text_len)
    model = from_pretrained(run).eval().to(resolve(device))
    images, _ = model.generate_images(text.expand(n, -1), top_k if top_k is not None else s.top_k,
                                      generator=torch.Generator().manual_seed(seed))
    images = images.clamp(-1, 1)
    if rerank:
        from zupu.recipes.clip import tokenizer

        clip = tokenizer()([prompt], context_length=dalle.clip_settings(s).context, truncation=True)
        images = images[model.rerank(images[None], clip["input_ids"], clip["attention_mask"])[0]]
    return ((images + 1) / 2).cpu()


def save_grid(images: torch.Tensor, path: str | Path, scale: int = 4) -> None:
    """Images (n, 1 or 3, H, W) in [0, 1] side by side in one PNG, each enlarged `scale` times (nearest), written
    atomically."""
    import numpy as np
    from PIL import Image

    from zupu.atomic import write_bytes

    row = np.concatenate([im.permute(1, 2, 0).numpy() for im in images], axis=1)  # (H, n * W, C)
    rgb = row.shape[2] == 3
    pixels = ((row if rgb else row[:, :, 0]) * 255).round().astype(np.uint8)
    im = Image.fromarray(pixels, mode="RGB" if rgb else "L")
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def cmd_draw(args: argparse.Namespace) -> int:
    from zupu.checkpoint import read_config

    if args.prompt is not None and args.label is not None:
        raise SettingError("give --prompt or --label, not both")
    # a text-to-image pipeline folder (diffusers' layout) has model_index.json, not config.json
    config = Path(args.run) / "config.json"
    if config.is_file() and (read_config(args.run).get("zupu") or {}).get("member") == "dalle":
        images = draw_dalle(args.run, args.prompt, args.n, args.seed, args.rerank, args.top_k, args.device)
        out = Path(args.out or Path(args.run) / f"draw-seed{args.seed}.png")
        save_grid(images, out)
        print(out)
        return 0
    if args.rerank:
        raise SettingError("--rerank needs a DALL-E run (it reranks by the run's CLIP)")
    images = draw(args.run, args.label if args.label is not None else args.prompt, args.steps, args.guidance,
                  args.seed, args.n, args.init, args.strength, args.mask, args.outpaint, args.device)
    out = Path(args.out or Path(args.run) / f"draw-seed{args.seed}.png")
    save_grid(images, out)
    print(out)
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("draw", help="draw images with a trained diffusion run (guidance, img2img, inpainting) or a "
                                    "DALL-E run (CLIP reranking)")
    s.add_argument("run", help="a run directory of `zupu train diffusion` or `zupu train dalle`")
    s.add_argument("--prompt", help="what to draw: a text (text-to-image and DALL-E runs, e.g. 'a red seven') or a "
                                    "class name (e.g. 'sneaker')")
    s.add_argument("--label", help="a class name or index")
    s.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    s.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance w >= 0 (default 2)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n", "--samples", type=int, default=8, help="how many images (default 8)")
    s.add_argument("--rerank", action="store_true", help="DALL-E: order the samples by its CLIP, best first")
    s.add_argument("--top-k", type=int, help="DALL-E: sample each image token among the k likeliest (default: "
                                             "the recipe's)")
    s.add_argument("--init", help="a PNG of the run's size (grayscale, or RGB for text-to-image) to start from "
                   "(img2img), to inpaint or to outpaint")
    s.add_argument("--strength", type=float, default=0.7, help="img2img: how far to noise --init (0-1, default 0.7)")
    s.add_argument("--mask", help="a grayscale PNG like --init: white pixels are redrawn, black ones kept")
    s.add_argument("--outpaint", type=int, default=0, help="text-to-image: draw a border this many pixels wide "
                   "around --init (a multiple of 8)")
    s.add_argument("--out", help="the PNG to write (default RUN/draw-seed<S>.png)")
    s.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default: cpu)")
    s.set_defaults(func=cmd_draw)
