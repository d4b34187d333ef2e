"""Checkpoints: the shared tensor reader (shards, pytorch_model.bin, dtype policy, broken files), nested configs,
and models made of parts in diffusers' layout, each checked against what transformers / diffusers write and read."""

import json
from dataclasses import asdict, dataclass, field

import pytest
import torch
from reference import need
from safetensors.torch import save_file
from test_gpt import HF as GPT_MODELS

import zupu
from zupu import create, registry
from zupu.atomic import write_json
from zupu.checkpoint import (
    config_from_dict,
    load_model,
    load_part,
    load_parts,
    read_config,
    read_parts,
    save_model,
    save_parts,
)
from zupu.errors import CheckpointError
from zupu.hf.tensors import read_tensors

transformers = need("transformers")

HF = {
    "gpt2": GPT_MODELS["gpt2"],  # the GPT parity tests' own tiny GPT-2 (odd widths, no square shapes)
    "bert": lambda: transformers.BertModel(transformers.BertConfig(
        vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)),
}
IDS = torch.randint(0, 101, (2, 17), generator=torch.Generator().manual_seed(1))


def _hf(name: str, dtype: torch.dtype = torch.float32):
    torch.manual_seed(0)
    return HF[name]().to(dtype).eval()


def _reference(hf, ids):
    with torch.no_grad():
        out = hf(ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("name", list(HF))
def test_sharded_and_bin_checkpoints_load_like_safetensors(name, tmp_path):
    hf = _hf(name)
    hf.save_pretrained(tmp_path / "one")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    # transformers 5 only writes safetensors; pytorch_model.bin is the layout older releases wrote
    # (safe_serialization=False): a torch.save'd state dict beside config.json, which transformers still loads
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_bytes((tmp_path / "one" / "config.json").read_bytes())
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    want = _reference(hf, IDS)
    assert torch.equal(_reference(type(hf).from_pretrained(tmp_path / "bin").eval(), IDS), want)

    outs = {}
    for layout in ("one", "sharded", "bin"):
        model = zupu.from_pretrained(tmp_path / layout)
        with torch.no_grad():
            outs[layout] = model(IDS)
    assert (outs["one"] - want).abs().max().item() < 1e-5
    assert torch.equal(outs["sharded"], outs["one"]) and torch.equal(outs["bin"], outs["one"])
    file, sharded, pickled = (read_tensors(tmp_path / layout) for layout in ("one", "sharded", "bin"))
    assert sharded.keys() == file.keys() and all(torch.equal(sharded[k], file[k]) for k in file)
    assert all(torch.equal(pickled[k], file[k]) for k in file)  # the .bin also holds the tied lm_head


def test_dtype_keeps_the_files_or_casts(tmp_path):
    hf = _hf("gpt2", torch.bfloat16)
    hf.save_pretrained(tmp_path)
    file = read_tensors(tmp_path)
    assert {t.dtype for t in file.values()} == {torch.bfloat16}
    assert all(t.dtype == torch.float16 for t in read_tensors(tmp_path, torch.float16).values())

    default = zupu.from_pretrained(tmp_path)  # float32, as zupu always loaded
    kept = zupu.from_pretrained(tmp_path, dtype=None)
    cast = zupu.from_pretrained(tmp_path, dtype=torch.float16)
    assert {p.dtype for p in default.parameters()} == {torch.float32}
    assert {p.dtype for p in kept.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in cast.parameters()} == {torch.float16}
    wte = file["transformer.wte.weight"]
    assert torch.equal(kept.wte.weight, wte) and torch.equal(default.wte.weight, wte.float())
    assert torch.equal(cast.wte.weight, wte.half())
    with torch.no_grad():  # bf16 weights upcast exactly: the float32 model is transformers' in float32
        want = _reference(hf.float(), IDS)
        assert (default(IDS) - want).abs().max().item() < 1e-5
        assert (kept(IDS).float() - want).abs().max().item() < 0.1  # computed in bf16

    # only floating-point tensors are cast; ids and masks keep their integer / bool dtype
    save_file({"w": torch.randn(3), "ids": torch.arange(3), "mask": torch.tensor([True, False])}, tmp_path / "m.st")
    got = read_tensors(tmp_path / "m.st", torch.bfloat16)
    assert (got["w"].dtype, got["ids"].dtype, got["mask"].dtype) == (torch.bfloat16, torch.int64, torch.bool)

    model = create("backprop-mlp", "tiny")  # a zupu run whose weights are half float32, half float16
    save_model(model, tmp_path / "run")
    state = read_tensors(tmp_path / "run")
    save_file({k: v.half() if k.startswith("weights") else v for k, v in state.items()},
              tmp_path / "run" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"mixes \['torch.float16', 'torch.float32'\].*pass dtype="):
        load_model(tmp_path / "run", dtype=None)
    assert {p.dtype for p in load_model(tmp_path / "run").parameters()} == {torch.float32}


def test_broken_weights_are_errors_that_name_the_file(tmp_path):
    hf = _hf("gpt2")
    hf.save_pretrained(tmp_path / "one")
    weights = tmp_path / "one" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=f"{weights} is not a readable safetensors file.*truncated"):
        zupu.from_pretrained(tmp_path / "one")

    hf.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    shard = tmp_path / "sharded" / sorted(set(index["weight_map"].values()))[1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"{shard} is missing"):
        zupu.from_pretrained(tmp_path / "sharded")
    key = next(iter(index["weight_map"]))
    write_json(tmp_path / "sharded" / "model.safetensors.index.json", {"weight_map": {key: "../elsewhere.bin"}})
    with pytest.raises(CheckpointError, match="not a file name beside the index"):
        read_tensors(tmp_path / "sharded")

    (tmp_path / "bin").mkdir()
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    blob = (tmp_path / "bin" / "pytorch_model.bin").read_bytes()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="pytorch_model.bin is not a readable PyTorch checkpoint.*truncated"):
        read_tensors(tmp_path / "bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no weights: expected one of model.safetensors, "):
        read_tensors(tmp_path / "empty")


# Nested configs, with test-only dataclasses shaped like CLIP's (a text and a vision config) and SAM's (three).
@dataclass
class TextConfig:
    width: int
    layers: tuple[int, ...] = (1, 2)


@dataclass
class VisionConfig:
    patch: int = 4
    grid: tuple[tuple[int, int], ...] = ((2, 3),)


@dataclass
class PairConfig:
    text: TextConfig = field(default_factory=lambda: TextConfig(8))
    vision: VisionConfig | None = None
    decoders: tuple[TextConfig, ...] = ()
    scale: float = 1.0


def test_nested_configs_round_trip_through_json(tmp_path):
    config = PairConfig(TextConfig(16, (3, 4, 5)), VisionConfig(8, ((1, 2), (3, 4))),
                        (TextConfig(2), TextConfig(3, ())), 0.5)
    write_json(tmp_path / "config.json", asdict(config))
    saved = read_config(tmp_path)
    assert saved["vision"] == {"patch": 8, "grid": [[1, 2], [3, 4]]}  # nested JSON objects, not flattened keys
    back = config_from_dict(PairConfig, saved, "config.json")
    assert back == config and type(back.vision) is VisionConfig and type(back.decoders[1]) is TextConfig
    assert type(back.vision.grid[1]) is tuple and type(back.text.layers) is tuple
    assert config_from_dict(PairConfig, {}, "c") == PairConfig()  # missing keys with defaults take them

    with pytest.raises(CheckpointError, match=r"c: vision: unknown keys \['patches'\] for VisionConfig"):
        config_from_dict(PairConfig, {"vision": {"patches": 3}}, "c")
    with pytest.raises(CheckpointError, match=r"c: decoders\[1\]: missing keys \['width'\] that TextConfig needs"):
        config_from_dict(PairConfig, {"decoders": [{"width": 1}, {"layers": []}]}, "c")
    with pytest.raises(CheckpointError, match="c: text: expected an object for TextConfig, got list"):
        config_from_dict(PairConfig, {"text": [1, 2]}, "c")
    with pytest.raises(CheckpointError, match=r"c: vision: grid\[0\]: expected 2 items, got 3"):
        config_from_dict(PairConfig, {"vision": {"grid": [[1, 2, 3]]}}, "c")
    assert config_from_dict(PairConfig, {"text": {"width": 1, "hf_only": 0}, "extra": 1}, "c", strict=False) == \
        PairConfig(TextConfig(1))


@pytest.mark.parametrize("member", [m for m in registry.members() if m.works and m.model], ids=lambda m: m.name)
def test_every_member_config_round_trips(member, tmp_path):
    model = create(member.name, "tiny")
    save_model(model, tmp_path, {"recipe": "test"})
    want = asdict(model.config)
    if not hasattr(model, "classifier"):  # HF's config.json of a bare encoder (ViTModel) has no label count
        want.pop("num_labels", None)
    got = load_model(tmp_path).config
    # nested configs (CLIP's text and vision, RLHF's language model) come back as dataclasses, compared as dicts;
    # tuples (M-P's nested unit tables) come back as tuples
    assert {k: v for k, v in asdict(got).items() if k in want} == want


# Models made of parts, in diffusers' layout
diffusers = need("diffusers")


def _ddpm():
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    return diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=50))


def test_reads_a_pipeline_diffusers_saved_as_far_as_it_knows_the_parts(tmp_path):
    pipe = _ddpm()
    pipe.save_pretrained(tmp_path)
    index = read_parts(tmp_path)
    assert index.class_name == "DDPMPipeline"
    assert index.parts == {"unet": ("diffusers", "UNet2DModel"), "scheduler": ("diffusers", "DDPMScheduler")}
    scheduler = load_part(tmp_path, "scheduler")
    assert scheduler["_class_name"] == "DDPMScheduler" and scheduler["num_train_timesteps"] == 50
    assert {k: v for k, v in scheduler.items() if not k.startswith("_")} == \
        json.loads(json.dumps({k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}))
    # the shared reader finds diffusers' weights file in the part's folder
    state = read_tensors(tmp_path / "unet")
    own = pipe.unet.state_dict()
    assert state.keys() == own.keys() and all(torch.equal(state[k], own[k]) for k in own)
    assert type(load_parts(tmp_path)["unet"]).__name__ == "UNet"  # the diffusion member loads diffusers' UNets
    for where in (tmp_path / "unet" / "config.json", tmp_path / "model_index.json"):  # a class zupu has no loader for
        where.write_text(where.read_text().replace("UNet2DModel", "UNet1DModel"))
    with pytest.raises(CheckpointError, match="part 'unet' is diffusers's UNet1DModel, which zupu does not load"):
        load_parts(tmp_path)
    with pytest.raises(CheckpointError, match="a model made of parts.*load_parts"):
        zupu.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="has no part 'vae'; its parts: scheduler, unet"):
        load_part(tmp_path, "vae")


def test_zupu_parts_save_in_diffusers_layout_and_load_alone(tmp_path):
    torch.manual_seed(0)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=10, beta_schedule="squaredcos_cap_v2")
    arguments = {k: v for k, v in scheduler.config.items() if not k.startswith("_")}  # its constructor's
    parts = {"text_encoder": create("bert", "tiny"), "classifier": create("lenet", "tiny"),
             "scheduler": {"_class_name": "DDPMScheduler", **arguments}, "safety_checker": None}
    save_parts(parts, tmp_path, "ToyPipeline", {"recipe": "test"})

    index = diffusers.DiffusionPipeline.load_config(tmp_path)  # diffusers' own reader takes zupu's index
    assert index["_class_name"] == "ToyPipeline" and index["_diffusers_version"]
    assert index["text_encoder"] == ["transformers", "BertModel"] and index["classifier"] == ["zupu", "LeNet5"]
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"] and index["safety_checker"] == [None, None]
    theirs = diffusers.DDPMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    assert {k: v for k, v in theirs.config.items() if not k.startswith("_")} == arguments
    assert torch.equal(theirs.betas, scheduler.betas)
    encoder = transformers.BertModel.from_pretrained(tmp_path / "text_encoder").eval()  # the named class loads it
    with torch.no_grad():
        want = parts["text_encoder"].eval()(IDS % 16)
        assert (encoder(IDS % 16).last_hidden_state - want).abs().max().item() < 1e-5

    loaded = load_parts(tmp_path)
    assert loaded.keys() == parts.keys() and loaded["safety_checker"] is None
    assert loaded["scheduler"]["beta_schedule"] == "squaredcos_cap_v2"
    for name in ("text_encoder", "classifier"):
        alone = zupu.from_pretrained(tmp_path / name)
        assert type(alone) is type(parts[name]) is type(loaded[name])
        a, b = parts[name].state_dict(), alone.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_config(tmp_path / "classifier")["zupu"]["recipe"] == "test"

    with pytest.raises(CheckpointError, match="part 'tokenizer' is a str: a part is an nn.Module"):
        save_parts({"tokenizer": "gpt2"}, tmp_path / "bad", "X")
    with pytest.raises(CheckpointError, match="part name '_unet' must be a Python identifier"):
        save_parts({"_unet": None}, tmp_path / "bad", "X")
    assert not (tmp_path / "bad" / "model_index.json").exists()
    write_json(tmp_path / "scheduler" / "scheduler_config.json", {"_class_name": "DDIMScheduler"})
    with pytest.raises(CheckpointError, match="is a 'DDIMScheduler', but model_index.json says"):
        load_part(tmp_path, "scheduler")
