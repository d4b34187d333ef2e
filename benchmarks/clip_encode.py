"""zupu's CLIP vs transformers' CLIPModel: image and text encoding with the same weights, side by side.

    python benchmarks/clip_encode.py [--repeats 5]

Each config is built as a transformers CLIPModel (random weights), saved, and loaded into zupu through
`zupu.hf.clip`; the two models' features are checked equal, then `get_image_features` and
`get_text_features` run in turn, `repeats` alternating rounds in this process with the same inputs and
torch's thread count, under `torch.no_grad`. The table reports median times and the zupu/transformers time
ratio (absolute times on a shared machine are noise; ratios less so). Writes benchmarks/RESULTS-clip.md (or
--out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from results import Run

# the emoji recipe's model (zupu/recipes/clip.py) and OpenAI's ViT-B/32 (openai/clip-vit-base-patch32)
CONFIGS = {
    "emoji recipe (2+2 layers, d=64, 32px, patch 8)": dict(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=32),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=64, batch=256, text_len=16),
    "ViT-B/32 (12+12 layers, 224px, 151M)": dict(text_config={}, vision_config={}, projection_dim=512, batch=8,
                                                 text_len=77),
}


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(label: str, c: dict, repeats: int) -> list[str]:
    """Table rows (image, text) for one config: median ms of zupu and transformers, and their ratio."""
    import transformers

    from zupu.hf.clip import from_pretrained

    cfg = {k: v for k, v in c.items() if k not in ("batch", "text_len")}
    torch.manual_seed(0)
    ref = transformers.CLIPModel(transformers.CLIPConfig(**cfg)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = from_pretrained(tmp).eval()
    v, t = ref.config.vision_config, ref.config.text_config
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(c["batch"], 3, v.image_size, v.image_size, generator=g)
    ids = torch.randint(0, t.vocab_size - 2, (c["batch"], c["text_len"]), generator=g)
    ids[:, -1] = t.eos_token_id  # every caption fills the context and ends with <|endoftext|>
    mask = torch.ones_like(ids)
    contenders = {
        "image": (lambda: ours.get_image_features(pixels),
                  lambda: ref.get_image_features(pixel_values=pixels).pooler_output),
        "text": (lambda: ours.get_text_features(ids, mask),
                 lambda: ref.get_text_features(input_ids=ids, attention_mask=mask).pooler_output)}
    rows = []
    with torch.no_grad():
        for kind, (z, r) in contenders.items():
            torch.testing.assert_close(z(), r(), atol=1e-4, rtol=1e-4)  # also the warm-up
            tz, tr = [], []
            for _ in range(repeats):  # alternate, so a load spike hits both
                tz.append(timed(z))
                tr.append(timed(r))
            mz, mr = statistics.median(tz), statistics.median(tr)
            shape = (f"{c['batch']} images {v.image_size}px" if kind == "image"
                     else f"{c['batch']} captions x {c['text_len']} tokens")
            rows.append(f"| {label} | {kind}: {shape} | {mz * 1e3:.1f} | {mr * 1e3:.1f} | {mz / mr:.2f} |")
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-clip.md"),
                    help="the RESULTS file to write")
    args = ap.parse_args()
    run = Run(__file__)
    import transformers

    rows = [row for label, c in CONFIGS.items() for row in measure(label, c, args.repeats)]
    table = ("| model | encoding | zupu ms | transformers ms | time ratio zupu/transformers |\n"
             "|---|---|---|---|---|\n" + "\n".join(rows))
    note = (f"# CLIP: image and text encoding vs transformers' CLIPModel\n\n"
            f"Same weights (a transformers CLIPModel loaded into zupu through `zupu.hf.clip`, features checked "
            f"equal within 1e-4), same inputs, same process and torch threads ({torch.get_num_threads()}), "
            f"`torch.no_grad`, median of {args.repeats} alternating rounds after a warm-up; transformers "
            f"{transformers.__version__} with its default attention implementation.\n\n")
    run.write(args.out, note + table, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
