"""`zupu push RUN ORG/NAME --space`: a small gradio demo Space for a run, which a hub with --run-spaces runs.

The Space holds the run's files (weights, config, tokenizer; not its resume state) and an `app.py` chosen by
what the run is: a language model with its tokenizer gets a text box that continues a prompt, an image
classifier an image input and its top classes. The app loads the run with `zupu.from_pretrained(".")`, so it
needs zupu, torch and gradio where the hub runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

from zupu.errors import ZupuError

TEXT_APP = '''"""{title}: continue a prompt (zupu push --space)."""
import gradio as gr

import zupu
from zupu import tokenizers
from zupu.sampling import stream_text

model = zupu.from_pretrained(".")
tokenizer = tokenizers.load(".")


def complete(prompt: str, max_new_tokens: float = 200, temperature: float = 0.8) -> str:
    prompt = prompt or "\\n"
    return prompt + "".join(stream_text(model, tokenizer, prompt, int(max_new_tokens), float(temperature), seed=0))


demo = gr.Interface(complete, [gr.Textbox(label="Prompt", value={prompt!r}),
                               gr.Slider(1, 500, value=200, step=1, label="New tokens"),
                               gr.Slider(0, 2, value=0.8, label="Temperature (0: greedy)")],
                    gr.Textbox(label="Text"), title={title!r}, api_name="complete")
if __name__ == "__main__":
    demo.launch()
'''

IMAGE_APP = '''"""{title}: classify an image (zupu push --space)."""
import json

import gradio as gr
import numpy as np
import torch
from PIL import Image

import zupu

model = zupu.from_pretrained(".")
config = json.load(open("config.json"))
size, channels = config["image_size"], config.get("num_channels", 3)
labels = config.get("id2label") or {{}}


def classify(image: np.ndarray) -> dict[str, float]:
    img = Image.fromarray(image).convert("L" if channels == 1 else "RGB").resize((size, size))
    x = torch.tensor(np.asarray(img), dtype=torch.float32) / 255
    x = x[None, None] if channels == 1 else x.permute(2, 0, 1)[None]  # (1, C, H, W)
    x = (x - x.mean()) / (x.std() + 1e-6)  # the recipes standardise over their data set; here over the image
    with torch.no_grad():
        out = model(x)
    p = (out if isinstance(out, torch.Tensor) else out.logits).softmax(-1)[0]
    return {{labels.get(str(i), str(i)): float(p[i]) for i in range(len(p))}}


demo = gr.Interface(classify, gr.Image(type="numpy", label="Image"), gr.Label(num_top_classes=5, label="Classes"),
                    title={title!r}, api_name="classify")
if __name__ == "__main__":
    demo.launch()
'''


def app_for(run: Path) -> tuple[str, str]:
    """(kind, app.py source) for run directory `run`; ZupuError when zupu has no demo for what it holds."""
    from zupu.checkpoint import from_pretrained

    cfg = json.loads((run / "config.json").read_text())
    member = (cfg.get("zupu") or {}).get("member") or cfg.get("model_type") or "model"
    title = f"{member} ({run.name})"
    model = from_pretrained(run)
    has_tokenizer = any((run / n).is_file() for n in ("tokenizer.json", "vocab.json", "encoder.json"))
    if has_tokenizer and hasattr(model, "generate"):  # what `zupu generate RUN` needs
        return "text", TEXT_APP.format(title=title, prompt="ROMEO:")
    if isinstance(cfg.get("image_size"), int) and _classifies(model, cfg):
        return "image", IMAGE_APP.format(title=title)
    raise ZupuError(f"{run}: zupu has a demo Space for language models (a run with its tokenizer) and image "
                    f"classifiers (image_size in config.json, one image in, class scores out); {member} is neither")


def _classifies(model, cfg: dict) -> bool:
    """Whether `model` maps one image (1, C, S, S) to one row of class scores, as IMAGE_APP calls it."""
    import torch

    x = torch.zeros(1, cfg.get("num_channels", 3), cfg["image_size"], cfg["image_size"])
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, TypeError, ValueError):
        return False
    out = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    return isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == 1


def card(repo_name: str, kind: str, run: Path) -> str:
    return (f"---\ntitle: {repo_name}\nsdk: gradio\napp_file: app.py\npinned: false\n---\n\n# {repo_name}\n\n"
            f"A {'text generation' if kind == 'text' else 'image classification'} demo of the zupu run "
            f"`{run.name}`, made by `zupu push RUN ORG/NAME --space`.\n")
