"""`zupu segment RUN IMAGE --point x,y [--box x0,y0,x1,y1]`: a trained SAM run's mask for one prompt.

The image is encoded once and the embedding kept on disk under its sha256 (and the weights'), so a second
prompt on the same image only runs the prompt encoder and the mask decoder; the output says which
happened and how long it took. The model was trained on S x S crops of images shrunk by the run's
`downsample`, so the image is shrunk the same way and encoded as overlapping S x S tiles (stride S / 2);
a prompt is answered in the tile whose centre is nearest to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zupu.errors import CheckpointError, ImageModeError, PromptError, SettingError

if TYPE_CHECKING:  # `zupu --help` lists this command without importing torch
    import torch


@dataclass
class Answer:
    mask: np.ndarray  # bool (H, W), the image's own size
    iou: float  # the IoU head's estimate
    encode_ms: float
    cached: bool  # the embedding came from the cache
    decode_ms: float


def parse_numbers(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise SettingError(f"{what} expects {n} comma-separated numbers, got {text!r}")
    return values


def tile_starts(length: int, size: int) -> list[int]:
    """Tile origins along one side: stride size / 2, the last flush with the end (one tile if it fits)."""
    starts = list(range(0, max(length - size, 0) + 1, size // 2))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


class Segmenter:
    """A SAM run ready to answer prompts: `segment(image, point=(x, y), box=(x0, y0, x1, y1))`."""

    def __init__(self, run: str | Path, cache: Path | None = None):
        from zupu.checkpoint import from_pretrained
        from zupu.data.download import cache_dir
        from zupu.models.sam import SAM

        run = Path(run)
        self.model = from_pretrained(run).eval()
        if not isinstance(self.model, SAM):
            raise CheckpointError(f"{run} holds a {type(self.model).__name__}, not a SAM: give a run of "
                                  "`zupu train sam`")
        meta = json.loads((run / "config.json").read_text()).get("zupu", {})
        self.downsample = int(meta.get("settings", {}).get("downsample", 1))
        self.size = self.model.config.image_size
        weights = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()[:16]
        self.cache = (cache or cache_dir() / "sam-embeddings") / weights

    def check(self, image: Any, point: tuple[float, float] | None,
              box: tuple[float, float, float, float] | None) -> np.ndarray:
        """The image as float pixels (H, W), after the one clear error each bad input deserves."""
        want = "L" if self.model.config.num_channels == 1 else "RGB"
        if image.mode != want:
            raise ImageModeError(f"the image is mode {image.mode!r} but this model reads {want} images "
                                 f"({self.model.config.num_channels} channel); convert it first, e.g. "
                                 f"PIL's image.convert({want!r})")
        w, h = image.size
        if point is None and box is None:
            raise PromptError("no prompt: give a point (--point x,y) or a box (--box x0,y0,x1,y1)")
        if point is not None and not (0 <= point[0] < w and 0 <= point[1] < h):
            raise PromptError(f"the point {point[0]:g},{point[1]:g} is outside the {w}x{h} image; "
                              f"x must be in [0, {w}) and y in [0, {h})")
        if box is not None:
            x0, y0, x1, y1 = box
            if x1 <= x0 or y1 <= y0:
                raise PromptError(f"the box {x0:g},{y0:g},{x1:g},{y1:g} is empty: it needs x0 < x1 and y0 < y1 "
                                  "(top-left corner first)")
            if x0 < 0 or y0 < 0 or x1 >= w or y1 >= h:
                raise PromptError(f"the box {x0:g},{y0:g},{x1:g},{y1:g} reaches outside the {w}x{h} image")
        return np.asarray(image, dtype=np.float32)

    def shrink(self, pixels: np.ndarray) -> torch.Tensor:
        """(H, W) -> the model's scale, padded to at least S on each side with the mean pixel: (1, h, w)."""
        import torch

        x = torch.from_numpy(pixels)[None, None]
        if self.downsample > 1:
            x = torch.nn.functional.interpolate(x, scale_factor=1 / self.downsample, mode="area")
        h, w = x.shape[-2:]
        pad = (0, max(self.size - w, 0), 0, max(self.size - h, 0))
        return torch.nn.functional.pad(x, pad, value=self.model.config.pixel_mean)[0]

    def embedding(self, pixels: np.ndarray) -> tuple[torch.Tensor, float, bool]:
        """Every tile's embedding (T, E, g, g), from the cache when this image was seen before."""
        import torch
        from safetensors.torch import load_file, save

        from zupu.atomic import write_bytes

        start = time.perf_counter()
        path = self.cache / f"{hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()}.safetensors"
        if path.is_file():
            return load_file(path)["embedding"], (time.perf_counter() - start) * 1e3, True
        x = self.shrink(pixels)
        s = self.size
        tiles = torch.stack([x[:, r:r + s, c:c + s] for r in tile_starts(x.size(1), s)
                             for c in tile_starts(x.size(2), s)])  # (T, 1, S, S)
        with torch.no_grad():
            emb = self.model.encode(tiles)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, save({"embedding": emb.contiguous()}))
        return emb, (time.perf_counter() - start) * 1e3, False

    def segment(self, image: Any, point: tuple[float, float] | None = None,
                box: tuple[float, float, float, float] | None = None) -> Answer:
        import torch

        pixels = self.check(image, point, box)
        emb, encode_ms, cached = self.embedding(pixels)
        start = time.perf_counter()
        d, s = self.downsample, self.size
        h, w = (-(-n // d) for n in pixels.shape)  # the shrunk image's size before padding
        rows, cols = tile_starts(max(h, s), s), tile_starts(max(w, s), s)
        # the prompt's centre at the model's scale picks the tile
        at = np.array(point if box is None else ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)) / d
        r = min(range(len(rows)), key=lambda i: abs(rows[i] + s / 2 - at[1]))
        c = min(range(len(cols)), key=lambda i: abs(cols[i] + s / 2 - at[0]))
        origin = torch.tensor([cols[c], rows[r]], dtype=torch.float32)
        kw: dict[str, torch.Tensor] = {}
        if point is not None:
            kw["point_coords"] = (torch.tensor(point) / d - origin)[None, None]
            kw["point_labels"] = torch.ones(1, 1, dtype=torch.long)
        if box is not None:
            kw["boxes"] = (torch.tensor(box) / d - origin.repeat(2)).clamp(0, s - 1)[None]
        with torch.no_grad():
            logits, iou = self.model.decode(emb[r * len(cols) + c][None], multimask_output=box is None, **kw)
        best = int(iou[0].argmax())
        tile = torch.nn.functional.interpolate(logits[:, best:best + 1], scale_factor=d, mode="bilinear")[0, 0]
        canvas = torch.zeros(max(h, s) * d, max(w, s) * d, dtype=torch.bool)  # outside the tile: not the object
        canvas[rows[r] * d:(rows[r] + s) * d, cols[c] * d:(cols[c] + s) * d] = tile > 0
        mask = canvas[:pixels.shape[0], :pixels.shape[1]].numpy()
        return Answer(mask, float(iou[0, best]), encode_ms, cached, (time.perf_counter() - start) * 1e3)


def write_outputs(image: Any, mask: np.ndarray, out: Path, stem: str) -> tuple[Path, Path]:
    """The mask as a black-and-white PNG and the image with the mask tinted red, both written atomically."""
    import io

    from PIL import Image

    from zupu.atomic import write_bytes

    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255
    rgb = np.repeat(grey[..., None], 3, -1)
    tinted = np.where(mask[..., None], 0.55 * rgb + 0.45 * np.array([1.0, 0.15, 0.15]), rgb)
    paths = out / f"{stem}.mask.png", out / f"{stem}.overlay.png"
    for path, picture in zip(paths, (Image.fromarray(mask.astype(np.uint8) * 255),
                                     Image.fromarray((tinted * 255).round().astype(np.uint8))), strict=True):
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        write_bytes(path, buf.getvalue())
    return paths


def cmd_segment(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    point = parse_numbers(args.point, 2, "--point") if args.point else None
    box = parse_numbers(args.box, 4, "--box") if args.box else None
    try:
        image = Image.open(args.image)
        image.load()
    except (FileNotFoundError, UnidentifiedImageError) as e:
        raise SettingError(f"cannot read the image {args.image}: {e}") from None
    seg = Segmenter(args.run)
    answer = seg.segment(image, point, box)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mask_path, overlay_path = write_outputs(image, answer.mask, out, Path(args.image).stem)
    how = "from the cache" if answer.cached else "encoded (kept for the next prompt)"
    print(f"image embedding {how}: {answer.encode_ms:.1f} ms; prompt decoded in {answer.decode_ms:.1f} ms")
    print(f"mask: {int(answer.mask.sum())} pixels, predicted IoU {answer.iou:.3f} -> {mask_path}, {overlay_path}")
    return 0


def add_parser(sub: Any) -> None:
    s = sub.add_parser("segment", help="a SAM run's mask for a click or a box on an image (mask PNG + overlay)")
    s.add_argument("run", help="a run directory of `zupu train sam`")
    s.add_argument("image", help="the image (PNG, ...), in the mode the model reads (grey for membrane)")
    s.add_argument("--point", help="a positive click x,y in pixels")
    s.add_argument("--box", help="a box x0,y0,x1,y1 in pixels (top-left, bottom-right)")
    s.add_argument("--out", default=".", help="folder for IMAGE.mask.png and IMAGE.overlay.png (default: here)")
    s.set_defaults(func=cmd_segment)
