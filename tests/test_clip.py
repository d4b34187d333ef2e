"""CLIP: the tokenizer's ids against transformers' CLIPTokenizer on real text, CLIPModel checkpoints both ways
with every weight randomised, the loss and temperature, and the errors bad input gets."""

import json
import math
import os
import random
from pathlib import Path

import pytest
import torch
from reference import need, unavailable

import zupu
from zupu import create
from zupu.checkpoint import load_model, save_model
from zupu.data import fetch
from zupu.errors import SettingError
from zupu.models.clip import CLIP, contrastive_loss
from zupu.tokenizers import CLIPTokenizer, TokenizerError

transformers = need("transformers")


# --- tokenizer ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """zupu's tokenizer from OpenAI's merges file, and transformers' CLIPTokenizer reading the files it saves."""
    tok = CLIPTokenizer.openai()
    folder = tok.save(tmp_path_factory.mktemp("clip-tokenizer"))
    return tok, transformers.CLIPTokenizer.from_pretrained(folder)


def real_texts() -> list[str]:
    """Emoji names and keywords (iamcal/emoji-data) and the first Tiny Shakespeare lines."""
    emoji_json = Path(os.environ.get("ZUPU_DATA_MIRROR", "")) / "emoji-noto-64" / "emoji.json"
    if not emoji_json.is_file():  # the mirror's copy: fetching the registered dataset would copy its 3,786 PNGs
        unavailable(f"{emoji_json} is missing; set ZUPU_DATA_MIRROR to the data mirror")
    emoji = json.loads(emoji_json.read_text(encoding="utf-8"))
    names = [e["name"] for e in emoji if e.get("name")]
    keywords = sorted({k for e in emoji for k in e.get("keywords") or []})
    lines = fetch("tinyshakespeare")["input.txt"].read_text(encoding="utf-8").split("\n")[:2000]
    return names + keywords + lines


def test_known_ids_of_the_real_vocabulary(tokenizers):
    tok, _ = tokenizers
    assert tok.vocab_size == 49408 and len(tok.merges) == 48894
    # openai/clip-vit-base-patch32's tokenizer on its model card's captions
    assert tok.encode("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.encode("A  Photo of a DOG") == [49406, 320, 1125, 539, 320, 1929, 49407]


def test_ids_and_decoding_equal_transformers_on_real_text(tokenizers):
    tok, hf = tokenizers
    texts = real_texts()
    assert len(texts) > 3500
    assert [tok.encode(t) for t in texts] == hf(texts).input_ids
    for t in texts[::25]:
        ids = tok.encode(t)
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True)
        assert tok.decode(ids, skip_special=False) == hf.decode(ids)


def test_ids_equal_transformers_on_odd_unicode_and_special_tokens(tokenizers):
    tok, hf = tokenizers
    rng = random.Random(0)
    pool = [*"abcXYZ019 '\t\n!?.,<|>", "\u00a0", "\u2028", "\u3000", "\x85", "\u0301", "é", "Σ", "İ", "ß", "ǅ", "東",
            "京", "🙂", "👍🏽", "\u200b", "\ufeff", "٣", "Ⅻ", "½", "ﬁ", "\u212b", "'s", "'LL"]
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(0, 30))) for _ in range(500)]
    texts += ["ΟΔΟΣ Σίσυφος", "<|startoftext|>hi<|endoftext|> x", "<|ENDOFTEXT|>!", "a<|Startoftext|>b", ""]
    assert [tok.encode(t) for t in texts] == hf(texts).input_ids


def test_batches_pad_to_the_context_and_long_captions_fail_unless_truncated(tokenizers):
    tok, hf = tokenizers
    lines = real_texts()[-40:]
    long = " ".join(lines)
    batch = tok(lines + [long], truncation=True)
    want = hf(lines + [long], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], want["input_ids"]) and batch["input_ids"].shape == (41, 77)
    assert torch.equal(batch["attention_mask"], want["attention_mask"])
    assert batch["input_ids"][-1, -1] == tok.eos_id  # a cut caption still ends where the model pools
    longest = tok(lines, padding="longest")
    assert torch.equal(longest["input_ids"], hf(lines, padding="longest", return_tensors="pt")["input_ids"])
    with pytest.raises(TokenizerError, match=r"text 1 .* longer than the context of 77; .*truncation=True"):
        tok(["a cat", long])


def test_saved_files_load_back(tokenizers, tmp_path):
    tok, _ = tokenizers
    again = CLIPTokenizer.from_directory(tok.save(tmp_path))
    assert again.vocab == tok.vocab and again.encode("a red seven") == tok.encode("a red seven")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nt h\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="vocab.json is not the vocabulary"):
        CLIPTokenizer.from_directory(tmp_path)


# --- model: transformers parity ----------------------------------------------------------------------------

# three configs: projection widths, depths, widths, activations, image and patch sizes, and both pooling rules
# (eos_token_id 5, which is not the highest id in the inputs; the legacy 2: pool at the highest id)
CONFIGS = {
    "quick_gelu": dict(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, bos_token_id=4, eos_token_id=5,
                         pad_token_id=5),
        vision_config=dict(hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
                           image_size=16, patch_size=4),
        projection_dim=24),
    "gelu_legacy_eos": dict(
        text_config=dict(vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=6, max_position_embeddings=12, hidden_act="gelu", layer_norm_eps=1e-6,
                         bos_token_id=0, eos_token_id=2, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=50, num_hidden_layers=2, num_attention_heads=2,
                           image_size=24, patch_size=8, hidden_act="gelu", layer_norm_eps=1e-6),
        projection_dim=16),
    "deep_narrow": dict(
        text_config=dict(vocab_size=80, hidden_size=24, intermediate_size=30, num_hidden_layers=4,
                         num_attention_heads=3, max_position_embeddings=20, bos_token_id=78, eos_token_id=79,
                         pad_token_id=79),
        vision_config=dict(hidden_size=40, intermediate_size=72, num_hidden_layers=4, num_attention_heads=5,
                           image_size=32, patch_size=16, num_channels=4),
        projection_dim=8),
}


def hf_clip(name: str):
    torch.manual_seed(0)
    ref = transformers.CLIPModel(transformers.CLIPConfig(**CONFIGS[name])).eval()
    with torch.no_grad():  # neither HF's init (unit LayerNorms, zero biases) nor symmetric
        for p in ref.parameters():
            p.normal_(0.5 if p.dim() == 1 else 0.0, 0.3)
        ref.logit_scale.fill_(2.3)
    return ref


def inputs(cfg: dict, n_text: int = 3, n_image: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t, v = cfg["text_config"], cfg["vision_config"]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(6, t["vocab_size"], (n_text, t["max_position_embeddings"]), generator=g)
    mask = torch.ones_like(ids)
    for row, end in enumerate(range(4, 4 + n_text)):  # captions of different lengths, right-padded
        ids[row, 0], ids[row, end] = t["bos_token_id"], t["eos_token_id"]
        ids[row, end + 1:], mask[row, end + 1:] = t["pad_token_id"], 0
    if t["eos_token_id"] == 2:  # legacy: the highest id marks the end
        ids[:, 1:] %= t["vocab_size"] - 1
        ids[torch.arange(n_text), torch.arange(4, 4 + n_text)] = t["vocab_size"] - 1
    pixels = torch.randn(n_image, v.get("num_channels", 3), v["image_size"], v["image_size"], generator=g)
    return ids, mask, pixels


def outputs(model, ids, mask, pixels) -> list[torch.Tensor]:
    with torch.no_grad():
        if isinstance(model, CLIP):
            out = model(ids, pixels, attention_mask=mask, return_loss=False)
            return [model.get_image_features(pixels), model.get_text_features(ids, attention_mask=mask),
                    out.logits_per_image, out.logits_per_text]
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        return [model.get_image_features(pixel_values=pixels).pooler_output,
                model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
                out.logits_per_image, out.logits_per_text]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_transformers_checkpoints_both_ways(name, tmp_path):
    ref = hf_clip(name)
    ref.save_pretrained(tmp_path / "hf")
    model = zupu.from_pretrained(tmp_path / "hf")
    assert type(model) is CLIP
    ids, mask, pixels = inputs(CONFIGS[name])
    want = outputs(ref, ids, mask, pixels)
    assert all((w - w.mean(0)).abs().max() > 0.1 for w in want)  # outputs that differ between inputs
    for got, w in zip(outputs(model, ids, mask, pixels), want, strict=True):
        torch.testing.assert_close(got, w, atol=1e-5, rtol=0)

    save_model(model, tmp_path / "zupu", {"recipe": "test"})
    back, info = transformers.CLIPModel.from_pretrained(tmp_path / "zupu", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for again, w in zip(outputs(back.eval(), ids, mask, pixels), want, strict=True):
        torch.testing.assert_close(again, w, atol=1e-5, rtol=0)
    reloaded = load_model(tmp_path / "zupu")
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values(),
                                                 strict=True))


def test_older_configs_with_text_config_dict_load_as_transformers_reads_them(tmp_path):
    hf_clip("quick_gelu").save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["text_config_dict"] = cfg["text_config"]
    cfg["text_config"] = {**cfg["text_config"], "hidden_size": 999}  # transformers ignores it when the dict is there
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ref = transformers.CLIPModel.from_pretrained(tmp_path).eval()
    model = zupu.from_pretrained(tmp_path)
    assert model.config.text_config.hidden_size == ref.config.text_config.hidden_size == 32
    ids, mask, pixels = inputs(CONFIGS["quick_gelu"])
    torch.testing.assert_close(outputs(model, ids, mask, pixels)[1], outputs(ref, ids, mask, pixels)[1],
                               atol=1e-5, rtol=0)


def test_loss_is_transformers_symmetric_cross_entropy(tmp_path):
    ref = hf_clip("quick_gelu")
    ref.save_pretrained(tmp_path)
    model = zupu.from_pretrained(tmp_path)
    ids, mask, pixels = inputs(CONFIGS["quick_gelu"], n_text=2, n_image=2)
    with torch.no_grad():
        want = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True).loss
        got = model(ids, pixels, attention_mask=mask, return_loss=True).loss
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # each image must pick its text and each text its image: a sharp diagonal costs nearly nothing
    assert contrastive_loss(torch.eye(4) * 100).item() < 1e-6
    assert contrastive_loss(torch.zeros(4, 4)).item() == pytest.approx(math.log(4))


def test_temperature_starts_at_one_over_0_07_and_is_clipped_at_100_in_training():
    model = create("clip", "tiny")
    assert model.temperature().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(5.0)
    assert model.train().temperature().item() == pytest.approx(100.0)
    assert model.eval().temperature().item() == pytest.approx(math.exp(5.0), rel=1e-6)


def test_tiny_preset_saves_and_loads(tmp_path):
    model = create("clip", "tiny")
    save_model(model, tmp_path, {"recipe": "test"})
    loaded = zupu.from_pretrained(tmp_path)
    assert type(loaded) is CLIP and loaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                 strict=True))


# --- bad input ---------------------------------------------------------------------------------------------


def test_bad_images_and_captions_get_one_clear_error_each():
    model = create("clip", "tiny").eval()
    ids = torch.tensor([[0, 7, 8, 98]])
    with pytest.raises(SettingError, match=r"expected 16x16 images, got \(32, 32\); resize"):
        model.get_image_features(torch.zeros(1, 3, 32, 32))
    with pytest.raises(SettingError, match=r"3 channel\(s\), got shape \(1, 4, 16, 16\)"):
        model.get_image_features(torch.zeros(1, 4, 16, 16))
    with pytest.raises(SettingError, match=r"3 channel\(s\), got shape \(16, 16\)"):
        model.get_image_features(torch.zeros(16, 16))
    with pytest.raises(SettingError, match="17 tokens are longer than the text context max_position_embeddings=16"):
        model.get_text_features(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(SettingError, match="as many texts as images"):
        model(ids, torch.zeros(2, 3, 16, 16), return_loss=True)
    assert model(ids, torch.zeros(2, 3, 16, 16)).logits_per_image.shape == (2, 1)


# --- recipes and `zupu embed --image` ------------------------------------------------------------------------


def test_recall_at_k_counts_the_true_match_among_the_k_nearest():
    from zupu.recipes.clip import recall_at

    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.3, 0.2, 0.0]])  # true matches ranked 1st, 2nd, 3rd
    assert recall_at(sim, 1) == pytest.approx(1 / 3) and recall_at(sim, 2) == pytest.approx(2 / 3)
    assert recall_at(sim, 3) == 1.0


def test_painted_digits_never_show_a_held_out_pair_and_captions_match_the_paint():
    from zupu.data.painted_digits import COLOURS, DIGITS, RGB, held_out
    from zupu.recipes.clip import PaintedBatches, tokenizer

    tok = tokenizer()
    prompts = tok([f"a {c} {n}" for n in DIGITS for c in COLOURS], context_length=8)
    y = torch.arange(640) % 10
    x = torch.rand(640, 28, 28) * (y[:, None, None] + 1)  # each digit's images told apart by their brightness
    batches = PaintedBatches(x, y, (prompts["input_ids"], prompts["attention_mask"]), 2, seed=3)
    for step in range(10):
        pixels, ids, _ = batches(step)
        digits = torch.tensor([DIGITS.index(tok.decode(row).split()[2]) for row in ids])
        colours = torch.tensor([list(COLOURS).index(tok.decode(row).split()[1]) for row in ids])
        assert len(set(zip(digits.tolist(), colours.tolist(), strict=True))) == len(ids) == 50  # each seen pair once
        assert not (colours == held_out(digits, 2)).any()
        # the paint is the captioned colour: each channel is the grey digit times that colour's component
        grey = pixels.add(1).div(2).amax(1, keepdim=True) / RGB[colours].amax(1)[:, None, None, None]
        torch.testing.assert_close(pixels.add(1).div(2), grey * RGB[colours][:, :, None, None], atol=1e-5, rtol=0)
        assert ((grey.amax((1, 2, 3)) > digits) & (grey.amax((1, 2, 3)) <= digits + 1)).all()  # the captioned digit


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A small CLIP with the real BPE vocabulary, saved as a run saves it (weights, BPE files, preprocessing)."""
    from zupu.models.clip import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
    from zupu.recipes.clip import save_preprocessing, tokenizer

    tok = tokenizer()
    torch.manual_seed(0)
    model = CLIP(CLIPConfig(CLIPTextConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=12),
                            CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=32, patch_size=8),
                            projection_dim=16)).eval()
    folder = tmp_path_factory.mktemp("clip-run")
    save_model(model, folder, {"recipe": "test"})
    save_preprocessing(type("R", (), {"out": folder, "path": folder.joinpath})(), 32)
    return folder, model, tok


def test_embed_images_as_the_recipe_feeds_them_and_ranks_texts(clip_folder, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from zupu.apps.embed import clip_embed
    from zupu.cli import main
    from zupu.data.transforms import images

    folder, model, tok = clip_folder
    png = Path(os.environ["ZUPU_DATA_MIRROR"]) / "emoji-noto-64" / "img" / "google" / "64"
    files = [str(png / "1f600.png"), str(png / "1f431.png")]  # 64px RGBA, averaged down to the model's 32
    image, text = clip_embed(model, folder, files, ["grinning face", "cat face"])
    # as the emoji recipe feeds them: composited on white by Pillow, area-averaged, (x - 0.5) / 0.5
    white = [Image.alpha_composite(Image.new("RGBA", (64, 64), "white"), Image.open(f).convert("RGBA")) for f in files]
    rgb = np.stack([np.asarray(w.convert("RGB")) for w in white]).transpose(0, 3, 1, 2)  # (2, 3, 64, 64)
    pixels = images(rgb.reshape(-1, 64, 64), 32).reshape(2, 3, 32, 32) * 2 - 1
    batch = tok(["grinning face", "cat face"], context_length=12)
    with torch.no_grad():
        want_image = torch.nn.functional.normalize(model.get_image_features(pixels), dim=-1)
        want_text = torch.nn.functional.normalize(model.get_text_features(batch["input_ids"],
                                                                          batch["attention_mask"]), dim=-1)
    torch.testing.assert_close(image, want_image, atol=2e-3, rtol=0)  # rounding to uint8 before averaging
    torch.testing.assert_close(text, want_text, atol=1e-5, rtol=0)
    assert main(["embed", "grinning face", "cat face", "--model", str(folder), "--image", *files]) == 0
    out = capsys.readouterr().out
    best = files[int((text[0] @ image.T).argmax())]
    assert "16-dimensional CLIP embeddings" in out and f"grinning face  -> {best}" in out


def test_embed_rejects_a_long_caption_and_images_of_the_wrong_size_or_mode(clip_folder, tmp_path):
    from PIL import Image

    from zupu.apps.embed import clip_embed
    from zupu.errors import ImageError

    folder, model, _ = clip_folder
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    Image.new("RGB", (48, 48)).save(tmp_path / "big.png")
    Image.new("L", (32, 32)).save(tmp_path / "grey.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(TokenizerError, match="longer than the context of 12"):
        clip_embed(model, folder, [str(tmp_path / "ok.png")], ["a cat " * 10])
    with pytest.raises(ImageError, match=r"big.png is 48x48; the model takes square 32x32 images"):
        clip_embed(model, folder, [str(tmp_path / "big.png")], [])
    with pytest.raises(ImageError, match=r"grey.png is a 'L' image; .* convert it to RGB"):
        clip_embed(model, folder, [str(tmp_path / "grey.png")], [])
    with pytest.raises(ImageError, match="text.png: not a readable image"):
        clip_embed(model, folder, [str(tmp_path / "text.png")], [])


@pytest.mark.slow
def test_quick_zero_shot_digits_names_pairs_it_never_saw(tmp_path):
    # the quick recipe (6 epochs, ~28 s on one core): ten colour x digit pairs never shown in training,
    # each held-out test image classified among all 60 captions
    from zupu.train import launch

    m = launch.train("clip", "zero-shot-digits", tmp_path, quick=True)["metrics"]
    assert m["test_zero_shot_acc"] >= 0.5 and m["test_zero_shot_acc"] > 25 * m["chance"]
    assert m["test_zero_shot_colour_acc"] >= 0.9  # the unseen pair's colour is named, though never with that digit
