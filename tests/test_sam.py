"""SAM: prompt encoder and mask decoder equal to the segment-anything package's with the same random weights;
prompt bookkeeping; a quick learning test on the real ISBI membrane crops; the segment app's cache and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.reference import segment_anything_modeling
from zupu.errors import CheckpointError
from zupu.hf.sam import load_segment_anything
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


def test_loading_names_every_wrong_tensor():
    ref, ours = reference(CFG), SAM(CFG)
    state = ref.state_dict()
    state.pop("mask_decoder.iou_token.weight")
    state["mask_decoder.mask_tokens.weight"] = torch.zeros(3, CFG.prompt_embed_dim)
    with pytest.raises(CheckpointError, match=r"iou_token.*mask_tokens.weight: checkpoint \(3, 32\)"):
        load_segment_anything(ours, state)
