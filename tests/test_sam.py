"""SAM: prompt encoder and mask decoder equal to the segment-anything package's with the same random weights;
prompt bookkeeping; a quick learning test on the real ISBI membrane crops; the segment app's cache and errors."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from reference import need, segment_anything_modeling
from torch import nn

from zupu.errors import CheckpointError
from zupu.hf.sam import load_segment_anything, load_transformers
from zupu.models.sam import SAM, SamConfig

CFG = SamConfig(image_size=32, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, prompt_embed_dim=32, mask_in_chans=16, decoder_depth=2, decoder_heads=4,
                decoder_mlp_dim=48, iou_head_hidden_dim=24)


def reference(c: SamConfig) -> nn.Module:
    """segment-anything's prompt encoder and mask decoder under the names its `Sam` gives them, every weight
    random (LayerNorm gains and biases too, so a swapped or skipped norm shows)."""
    m = segment_anything_modeling()
    ref = nn.Module()
    ref.prompt_encoder = m.PromptEncoder(embed_dim=c.prompt_embed_dim, image_embedding_size=(c.grid, c.grid),
                                         input_image_size=(c.image_size, c.image_size), mask_in_chans=c.mask_in_chans)
    ref.mask_decoder = m.MaskDecoder(
        transformer_dim=c.prompt_embed_dim, num_multimask_outputs=c.num_multimask_outputs,
        transformer=m.TwoWayTransformer(depth=c.decoder_depth, embedding_dim=c.prompt_embed_dim,
                                        num_heads=c.decoder_heads, mlp_dim=c.decoder_mlp_dim,
                                        attention_downsample_rate=c.attention_downsample_rate),
        iou_head_depth=c.iou_head_depth, iou_head_hidden_dim=c.iou_head_hidden_dim)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            scale = 0.5 if p.dim() == 1 else 1.0 / max(1, p[0].numel()) ** 0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if "norm" in name and name.endswith("weight")
                                                                  else 0.0))
    return ref.eval()


def prompts(c: SamConfig, b: int = 3) -> dict:
    g = torch.Generator().manual_seed(1)
    coords = torch.rand(b, 3, 2, generator=g) * c.image_size
    labels = torch.tensor([[1, 0, 1], [1, 1, -1], [0, 1, 0]])[:b]
    xy = torch.rand(b, 2, generator=g) * c.image_size / 2
    boxes = torch.cat([xy, xy + torch.rand(b, 2, generator=g) * c.image_size / 2], 1)
    masks = torch.randn(b, 1, 4 * c.grid, 4 * c.grid, generator=g)
    return {"points": (coords, labels), "boxes": boxes, "masks": masks}


CASES = [("points",), ("boxes",), ("points", "boxes"), ("points", "masks"), ("boxes", "masks")]


@pytest.mark.parametrize("kinds", CASES, ids=["+".join(k) for k in CASES])
@pytest.mark.parametrize("multimask", [True, False])
def test_prompt_encoder_and_mask_decoder_equal_segment_anything(kinds, multimask):
    torch.manual_seed(0)
    ref, ours = reference(CFG), SAM(CFG).eval()
    load_segment_anything(ours, ref.state_dict())
    p = {k: v for k, v in prompts(CFG).items() if k in kinds}
    args = (p.get("points"), p.get("boxes"), p.get("masks"))
    image = torch.randn(1, CFG.prompt_embed_dim, CFG.grid, CFG.grid)
    with torch.no_grad():
        sparse, dense = ref.prompt_encoder(*args)
        sparse_z, dense_z = ours.prompt_encoder(*args)
        torch.testing.assert_close(sparse_z, sparse, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(dense_z, dense, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.prompt_encoder.dense_pe(), ref.prompt_encoder.get_dense_pe(), atol=1e-5,
                                   rtol=1e-5)
        masks, iou = ref.mask_decoder(image, ref.prompt_encoder.get_dense_pe(), sparse, dense, multimask)
        point_coords, point_labels = p.get("points", (None, None))
        masks_z, iou_z = ours.decode(image, point_coords, point_labels, p.get("boxes"), p.get("masks"), multimask)
    assert masks.shape == masks_z.shape == (3, 3 if multimask else 1, CFG.image_size, CFG.image_size)
    assert masks.abs().mean() > 0.1 and iou.std() > 0.01  # not a degenerate comparison
    torch.testing.assert_close(masks_z, masks, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou_z, iou, atol=1e-5, rtol=1e-5)


@cache
def transformers_sam() -> nn.Module:
    """transformers' SamModel with CFG's shapes (a one-layer vision encoder nobody compares) and every prompt
    encoder and mask decoder weight random. Its two-way blocks take their LayerNorm eps from the config (1e-6
    by default); segment-anything's and zupu's are torch's 1e-5, so the config says 1e-5."""
    transformers = need("transformers")
    c = CFG
    e = c.prompt_embed_dim
    config = transformers.SamConfig(
        vision_config={"hidden_size": 16, "output_channels": e, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": c.image_size, "patch_size": c.patch_size, "window_size": 0,
                       "global_attn_indexes": [0], "num_pos_feats": e // 2, "num_channels": 1},
        prompt_encoder_config={"hidden_size": e, "image_size": c.image_size, "patch_size": c.patch_size,
                               "mask_input_channels": c.mask_in_chans, "layer_norm_eps": c.layer_norm_eps},
        mask_decoder_config={"hidden_size": e, "mlp_dim": c.decoder_mlp_dim, "num_hidden_layers": c.decoder_depth,
                             "num_attention_heads": c.decoder_heads, "iou_head_depth": c.iou_head_depth,
                             "iou_head_hidden_dim": c.iou_head_hidden_dim, "layer_norm_eps": 1e-5,
                             "attention_downsample_rate": c.attention_downsample_rate})
    ref = transformers.SamModel(config).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if not name.startswith("vision_encoder."):
                scale = 0.5 if p.dim() == 1 else 1.0 / max(1, p[0].numel()) ** 0.5
                p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if "norm" in name and name.endswith("weight")
                                                                      else 0.0))
    return ref


@pytest.mark.parametrize("kinds", CASES, ids=["+".join(k) for k in CASES])
@pytest.mark.parametrize("multimask", [True, False])
def test_prompt_encoder_and_mask_decoder_equal_transformers(kinds, multimask):
    ref = transformers_sam()  # built once (slow to build), never changed
    ours = SAM(CFG).eval()
    load_transformers(ours, ref.state_dict())
    p = {k: v for k, v in prompts(CFG).items() if k in kinds}
    coords, labels = p.get("points", (None, None))
    image = torch.randn(3, CFG.prompt_embed_dim, CFG.grid, CFG.grid)
    with torch.no_grad():
        # transformers: points (B, point_batch 1, N, 2), boxes (B, 1, 4)
        out = ref(image_embeddings=image, input_points=None if coords is None else coords[:, None],
                  input_labels=None if labels is None else labels[:, None],
                  input_boxes=None if "boxes" not in p else p["boxes"][:, None], input_masks=p.get("masks"),
                  multimask_output=multimask)
        masks_z, iou_z = ours.decode(image, coords, labels, p.get("boxes"), p.get("masks"), multimask)
    masks, iou = out.pred_masks[:, 0], out.iou_scores[:, 0]
    assert masks.shape == masks_z.shape == (3, 3 if multimask else 1, CFG.image_size, CFG.image_size)
    assert masks.abs().mean() > 0.1 and iou.std() > 1e-3  # not a degenerate comparison
    torch.testing.assert_close(masks_z, masks, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou_z, iou, atol=1e-5, rtol=1e-5)


def test_loading_names_every_wrong_tensor():
    ref, ours = reference(CFG), SAM(CFG)
    state = ref.state_dict()
    state.pop("mask_decoder.iou_token.weight")
    state["mask_decoder.mask_tokens.weight"] = torch.zeros(3, CFG.prompt_embed_dim)
    with pytest.raises(CheckpointError, match=r"iou_token.*mask_tokens.weight: checkpoint \(3, 32\)"):
        load_segment_anything(ours, state)


def test_corrective_click_goes_to_the_largest_error_region():
    from zupu.recipes.sam import next_click

    target = np.zeros((20, 20), bool)
    target[2:12, 2:12] = True
    pred = target.copy()
    pred[2:12, 8:12] = False  # a 10 x 4 miss
    pred[15:17, 15:17] = True  # a 2 x 2 spill: smaller
    x, y, label = next_click(pred, target)
    assert label == 1 and 8 <= x <= 11 and 2 <= y <= 11
    pred[13:20, 13:20] = True  # now the spill (49 pixels) is the larger error
    x, y, label = next_click(pred, target)
    assert label == 0 and 13 <= x <= 19 and 13 <= y <= 19


def test_focal_dice_loss_ranks_masks_and_best_of_three_picks_the_right_one():
    from zupu.recipes.sam import iou, mask_loss

    target = torch.zeros(1, 8, 8, dtype=torch.bool)
    target[0, 2:6, 2:6] = True
    good = torch.where(target, 6.0, -6.0)
    half = good.clone()
    half[0, :, 4:] = -6.0
    logits = torch.stack([torch.full_like(good[0], -6.0), half[0], good[0]])[None]  # (1, 3, 8, 8)
    losses = mask_loss(logits, target)
    assert losses.argmin(1).item() == 2 and losses[0, 0] > losses[0, 1] > losses[0, 2]
    torch.testing.assert_close(iou(logits, target), torch.tensor([[0.0, 0.5, 1.0]]))


def test_isbi_crops_prompt_one_connected_cell():
    from scipy import ndimage

    from zupu import data
    from zupu.recipes.sam import crops

    d = data.load("isbi2012-membrane")
    assert d.x.shape == d.y.shape == (30, 512, 512) and 0.7 < d.y.mean() < 0.85  # cells are ~78% of pixels
    b = crops("test", 8, 32, 2, np.random.default_rng(0), augment=True)
    assert b["x"].shape == (8, 1, 32, 32) and b["x"].max() > 100  # raw 0-255 pixels
    for t, click, centre, box in zip(b["target"].numpy(), b["click"].long(), b["centre"].long(), b["box"].long(),
                                     strict=True):
        assert ndimage.label(t)[1] == 1 and t.sum() >= 24
        assert t[click[1], click[0]] and t[centre[1], centre[0]]
        ys, xs = np.nonzero(t)
        assert box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_ambiguous_scenes_put_a_real_part_inside_a_whole_and_click_it():
    from zupu.recipes.sam import composites

    b = composites("test", 24, 32, np.random.default_rng(0))
    assert b["x"].shape == (24, 1, 32, 32) and len(b["target"]) == 48 and 0 <= b["x"].min() < b["x"].max() <= 255
    part, whole, target, amb = b["part"], b["whole"], b["target"], b["ambiguous"]
    assert not (part & ~whole).any() and (part.sum((1, 2)) >= 5).all() and (whole.sum((1, 2)) > part.sum((1, 2))).all()
    assert amb.tolist() == [True, False] * 24  # per scene: a click on the part, then one on the whole
    is_part, is_whole = (target == part).all((1, 2)), (target == whole).all((1, 2))
    assert is_whole[~amb].all() and (is_part | is_whole)[amb].all() and 4 <= is_part[amb].sum() <= 20  # coin flips
    for i, (x, y) in enumerate(b["click"].long().tolist()):
        assert part[i, y, x] == amb[i] and whole[i, y, x]
    for i, (x, y) in enumerate(b["centre"].long().tolist()):
        assert part[i, y, x] == amb[i] and whole[i, y, x]


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A SAM run (untrained tiny weights) as `zupu train sam` writes it, and a fresh embedding cache."""
    from zupu.checkpoint import save_model

    monkeypatch.setenv("ZUPU_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = SAM(SamConfig(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, prompt_embed_dim=16, mask_in_chans=8, decoder_depth=1,
                          decoder_heads=2, decoder_mlp_dim=32, iou_head_hidden_dim=16, pixel_mean=128.0,
                          pixel_std=50.0))
    return save_model(model, tmp_path / "run", {"recipe": "membrane", "settings": {"downsample": 2}})


def grey_image(tmp_path, mode: str = "L"):
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / f"cells-{mode}.png"
    Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8)).convert(mode).save(path)
    return path


def test_segment_writes_mask_and_overlay_and_reuses_the_embedding(run_dir, tmp_path, capsys):
    from PIL import Image

    from zupu.cli import main

    image = grey_image(tmp_path)
    out = tmp_path / "out"
    assert main(["segment", str(run_dir), str(image), "--point", "30,20", "--out", str(out)]) == 0
    assert "encoded" in capsys.readouterr().out
    assert main(["segment", str(run_dir), str(image), "--box", "5,5,30,25", "--out", str(out)]) == 0
    assert "from the cache" in capsys.readouterr().out
    mask, overlay = Image.open(out / "cells-L.mask.png"), Image.open(out / "cells-L.overlay.png")
    assert mask.size == overlay.size == (50, 40) and mask.mode == "L" and overlay.mode == "RGB"
    assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_segment_answers_in_the_tile_around_the_prompt(run_dir):
    """The mask a prompt gets on a big image equals the one it gets on that tile cut out on its own."""
    from PIL import Image

    from zupu.apps.segment import Segmenter

    seg = Segmenter(run_dir)
    rng = np.random.default_rng(1)
    big = rng.integers(0, 255, (64, 64), dtype=np.uint8)  # 32 x 32 at the model's scale: 3 x 3 tiles of 16
    whole = seg.segment(Image.fromarray(big), point=(33, 33))  # nearest tile centre: the middle one (8..24)
    alone = seg.segment(Image.fromarray(big[16:48, 16:48]), point=(17, 17))
    assert whole.mask[16:48, 16:48].tolist() == alone.mask.tolist()
    assert not whole.mask[:16].any() and not whole.mask[48:].any()
    assert whole.iou == pytest.approx(alone.iou, abs=1e-5)


@pytest.mark.parametrize("args, error", [
    (["--point", "50,3"], "point 50,3 is outside the 50x40 image"),
    (["--box", "10,10,10,30"], "box 10,10,10,30 is empty"),
    ([], "no prompt"),
])
def test_segment_bad_prompts_are_one_clear_error(run_dir, tmp_path, capsys, args, error):
    from zupu.cli import main

    assert main(["segment", str(run_dir), str(grey_image(tmp_path)), *args, "--out", str(tmp_path)]) == 2
    assert error in capsys.readouterr().err


def test_segment_wrong_image_mode_is_one_clear_error(run_dir, tmp_path):
    from PIL import Image

    from zupu.apps.segment import Segmenter
    from zupu.errors import ImageModeError

    with pytest.raises(ImageModeError, match="mode 'RGB' but this model reads L images"):
        Segmenter(run_dir).segment(Image.open(grey_image(tmp_path, "RGB")), point=(3, 3))


@pytest.mark.slow
def test_quick_membrane_run_reaches_its_milestone(tmp_path):
    """The quick recipe on the real ISBI crops: the IoU head's guesses correlate with the true IoUs (an untrained
    head's barely do), and one click gives masks well above the untrained model's (about 0.16 mIoU)."""
    from zupu.train.launch import train

    result = train("sam", out=tmp_path / "run", seed=0, quick=True)
    assert result["milestone"]["passed"], result["milestone"]
    assert result["metrics"]["test_miou_1click"] > 0.22  # measured 0.295-0.305 at seeds 0-2


@pytest.mark.slow
def test_quick_ambiguous_run_shows_three_guesses_beat_one_mask(tmp_path):
    """The quick recipe on part-in-whole scenes: on ambiguous clicks the best of the three guesses beats the
    single-mask model trained on the same batches (lower end of the paired 95% bootstrap interval)."""
    from zupu.train.launch import train

    result = train("sam", recipe="ambiguous", out=tmp_path / "run", seed=0, quick=True)
    assert result["milestone"]["passed"], result["milestone"]
    assert (tmp_path / "run" / "ambiguous.png").is_file()
