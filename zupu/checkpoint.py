"""Saving and loading models: `config.json` + `model.safetensors`, models made of parts, and `from_pretrained`.

A zupu run directory's `config.json` holds the model config's fields at the top level (named as in
the HF architecture's config where one exists) plus a `"zupu"` entry: the member and recipe that
made the run (not the owner of the class: scaling saves a GPT), seed, settings, and the class
(`architecture` in `model_module`). A directory without that entry is read as an HF checkpoint and
handed to the member whose `hf_model_types` lists its `model_type`. Such a member's models are saved in the HF
layout, unless its `zupu.hf` module's `fits(model)` says the architecture cannot hold this one (a
pre-LN encoder-decoder is no MarianMT), which then keeps zupu's own layout.

Configs nest: a config dataclass may hold other config dataclasses, tuples of them, or `X | None` (CLIP's
text and vision configs). They are saved as nested JSON objects and rebuilt from the field annotations
(`config_from_dict`); an unknown key or a missing one without a default is a `CheckpointError` naming it.

Weights are read by the one shared reader, `zupu.hf.tensors` (safetensors memory-mapped, shard indexes,
`pytorch_model.bin`). `load_model` / `from_pretrained` take `dtype`: float32 by default, `None` keeps the
checkpoint's own dtype, any other casts the floating-point weights.

A model made of separately loadable parts (an image pipeline: text encoder, denoiser, autoencoder,
scheduler) is a folder in diffusers' layout:

    model_index.json      {"_class_name": "...", "_diffusers_version": "...", "<part>": [library, class], ...}
    <part>/config.json + model.safetensors      a model: loads alone with `zupu.from_pretrained(<part>)`
    <part>/scheduler_config.json                a config-only part (diffusers' constructor arguments)

    save_parts({"unet": model, "scheduler": {"_class_name": "DDPMScheduler", ...}, "safety_checker": None},
               out, "MyPipeline")                  # library: "transformers" for a part saved in the HF layout,
                                                    # "zupu" for zupu's own, "diffusers" for scheduler configs
    read_parts(dir) -> PartsIndex(class_name, {part: (library, class) or None})   # zupu's or diffusers' index
    load_part(dir, "unet"), load_parts(dir)        # a model, a scheduler config dict, or None (absent part)

A part zupu has no loader for (diffusers' own UNet2DModel, say) is a `CheckpointError` naming its class.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save
from torch import nn

from zupu import registry
from zupu.atomic import write_bytes, write_json
from zupu.errors import CheckpointError, SettingError, ZupuError
from zupu.hf.tensors import find_weights, model_dtype, read_tensors

CONFIG, WEIGHTS = "config.json", "model.safetensors"
MODEL_INDEX, SCHEDULER_CONFIG = "model_index.json", "scheduler_config.json"
DIFFUSERS_LAYOUT = "0.42.0"  # the diffusers release whose pipeline layout save_parts writes (tests load it there)


def member_of(model: nn.Module) -> registry.Member:
    """The member whose model module defines the model's class: `zupu.models.<module>`, or a module inside it
    when the member is a package (`zupu.models.diffusion.unet`)."""
    module = type(model).__module__
    for m in registry.members():
        if module == f"zupu.models.{m.module_name}" or module.startswith(f"zupu.models.{m.module_name}."):
            return m
    raise ZupuError(f"{type(model).__name__} is not a zupu member's model (module {module})")


def save_state(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    # Clone so tied weights (shared storage) are written as separate tensors, which safetensors needs.
    write_bytes(path, st_save({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}))


def load_state(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a weights file or checkpoint directory, through the one shared reader
    (`zupu.hf.tensors`): `dtype=None` keeps the file's dtypes, a dtype casts the floating-point ones."""
    return read_tensors(path, dtype)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], where: str, assign: bool = False) -> None:
    """`load_state_dict(strict=True)` with an error that names every bad key. `assign` makes the tensors the
    parameters themselves (a model built on the meta device, no copy)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    check_keys(model, where, missing, unexpected, shapes)
    model.load_state_dict(state, assign=assign)


def check_keys(model: nn.Module, where: str, missing: list[str], unexpected: list[str], shapes: list[str]) -> None:
    """Raise one error that names every missing, unexpected and wrongly shaped key, if there are any."""
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(f"wrong shapes [{'; '.join(shapes)}]")
        raise CheckpointError(f"{where} does not fit {type(model).__name__}: " + ", ".join(parts))


def save_model(model: nn.Module, out: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write `config.json` and `model.safetensors` for `model` into directory `out`.

    The class's own member decides the layout (HF or zupu's); `meta` (a run's member, recipe, seed, settings)
    overrides the member the entry names, so a run records what made it, not whose class it saved."""
    out = Path(out)
    member = member_of(model)
    zupu_meta = {"member": member.name, "architecture": type(model).__name__,
                 "model_module": type(model).__module__, **(meta or {})}
    hf = _hf_module(member)
    if hf is not None and hasattr(hf, "save_pretrained") and getattr(hf, "fits", lambda m: True)(model):
        hf.save_pretrained(model, out, zupu_meta)
        return out
    config = dataclasses.asdict(model.config)
    write_json(out / CONFIG, {**config, "zupu": zupu_meta})
    save_state(model.state_dict(), out / WEIGHTS)
    return out


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    cfg_path = path if path.suffix == ".json" else path / CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} is missing: not a zupu run or HF checkpoint directory")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path} must hold a JSON object, got {type(cfg).__name__}")
    return cfg


def _hf_module(member: registry.Member):
    if not member.hf_model_types:
        return None
    try:
        return importlib.import_module(f"zupu.hf.{member.module_name}")
    except ModuleNotFoundError:
        return None


def _model_module(meta: dict[str, Any], member: registry.Member, where: Path):
    """The module that defines the saved class: the one the entry names, else (a run saved before entries
    named it) the member's own."""
    name = meta.get("model_module")
    if name is None:
        return member.model_module()
    if not isinstance(name, str) or not name.startswith("zupu.models."):
        raise CheckpointError(f"{where}: model_module {name!r} is not a zupu model module (zupu.models.*)")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise CheckpointError(f"{where}: model_module {name!r} does not exist in this zupu; "
                              "upgrade zupu or load the run where it was made") from None


def load_model(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32) -> nn.Module:
    """Load a zupu run directory or an HF checkpoint directory, its floating-point weights as `dtype`
    (`None` keeps the checkpoint's own dtype)."""
    path = Path(path)
    cfg = read_config(path)
    meta = cfg.get("zupu")
    model_type = cfg.get("model_type") or cfg.get("_class_name")  # diffusers names the class, not a type
    if model_type and (member := registry.member_for_model_type(model_type)):
        hf = _hf_module(member)
        if hf is None:
            raise CheckpointError(f"{path}: model_type {model_type!r} ({member.name}) has no HF loader yet")
        return hf.from_pretrained(path, dtype=dtype)
    if not isinstance(meta, dict) or "member" not in meta:
        raise CheckpointError(
            f"{path / CONFIG} has neither a zupu entry nor a model_type zupu knows "
            f"(got model_type={model_type!r}); is this a zupu run or HF checkpoint directory?"
        )
    member = registry.get(meta["member"])
    mod = _model_module(meta, member, path / CONFIG)
    arch = meta.get("architecture") or member.model
    cls = getattr(mod, arch, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise CheckpointError(f"{path / CONFIG}: {mod.__name__} has no architecture {arch!r}")
    config = config_from_dict(cls.config_class, {k: v for k, v in cfg.items() if k != "zupu"}, str(path / CONFIG))
    try:
        model = cls(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG} is not a valid {cls.config_class.__name__}: {e}") from None
    weights = find_weights(path)
    state = load_state(weights)
    load_into(model.to(model_dtype(state, dtype, str(weights))), state, str(weights))
    return model.eval()


def from_pretrained(path_or_repo_id: str | os.PathLike, dtype: torch.dtype | None = torch.float32,
                    quantize: str | None = None) -> nn.Module:
    """A zupu run dir, an HF checkpoint dir, a `.gguf` file, a weights-registry name (`smollm2`) or `org/name` on a
    zupu hub -> the zupu model, its floating-point weights as `dtype` (`None` keeps the checkpoint's own dtype).
    `quantize="int4"` (GGUF files only) keeps the file's 4-bit blocks for fast decoding (`zupu.hf.gguf.load`)."""
    from zupu.weights import registry as weights

    path = Path(path_or_repo_id)
    if str(path_or_repo_id) in weights.WEIGHTS:
        path = weights.fetch(str(path_or_repo_id))
    if path.suffix == ".gguf":
        from zupu.hf import gguf

        return gguf.load(path, dtype, quantize)
    if quantize is not None:
        raise SettingError(f"quantize={quantize!r} applies to GGUF files only; {path_or_repo_id} is not one")
    if path.exists():
        if (path / MODEL_INDEX).is_file() and not (path / CONFIG).is_file():
            raise CheckpointError(f"{path} is a model made of parts ({MODEL_INDEX}): load them all with "
                                  f"zupu.checkpoint.load_parts, or one with from_pretrained({path}/<part>)")
        return load_model(path, dtype)
    name = str(path_or_repo_id)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        from zupu.hub.client import snapshot

        return load_model(snapshot(name), dtype)
    raise CheckpointError(f"{name} is neither a local directory nor a hub repo id (org/name)")


# Nested configs ---------------------------------------------------------------------------------------------


def config_from_dict(config_cls: type, values: dict[str, Any], where: str, strict: bool = True) -> Any:
    """A config.json object -> `config_cls`, rebuilding the nested config dataclasses (and tuples of them) that
    its field annotations name. `strict`: an unknown key is an error (zupu's own configs); otherwise it is
    skipped, as an HF config.json carries many keys zupu has no field for. A missing key takes the field's
    default; one without a default is an error."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{where}: expected an object for {config_cls.__name__}, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown and strict:
        raise CheckpointError(f"{where}: unknown keys {unknown} for {config_cls.__name__} "
                              f"(its fields: {', '.join(fields)})")
    missing = sorted(n for n, f in fields.items() if n not in values
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise CheckpointError(f"{where}: missing keys {missing} that {config_cls.__name__} needs")
    hints = typing.get_type_hints(config_cls)
    kwargs = {n: _rebuild(hints[n], v, f"{where}: {n}", strict) for n, v in values.items() if n in fields}
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError, ZupuError) as e:
        raise CheckpointError(f"{where} is not a valid {config_cls.__name__}: {e}") from None


def _rebuild(tp: Any, value: Any, where: str, strict: bool) -> Any:
    """A JSON value -> the annotation `tp`: objects become config dataclasses, arrays tuples (or lists)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):  # `X | None`: the arm whose JSON form this value has
        for arm in args:
            sequence = typing.get_origin(arm) in (tuple, list)
            if (dataclasses.is_dataclass(arm) and isinstance(value, dict)) or (sequence and isinstance(value, list)):
                return _rebuild(arm, value, where, strict)
        return value
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, where, strict)
    if origin in (tuple, list) and isinstance(value, list | tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:  # a fixed-length tuple, e.g. (int, str)
            if len(args) != len(value):
                raise CheckpointError(f"{where}: expected {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(_rebuild(a, v, f"{where}[{i}]", strict) for i, (a, v) in pairs)
        item = args[0] if args else Any
        return origin(_rebuild(item, v, f"{where}[{i}]", strict) for i, v in enumerate(value))
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: _rebuild(args[1], v, f"{where}[{k!r}]", strict) for k, v in value.items()}
    return value


# Models made of parts ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PartsIndex:
    """What `model_index.json` says: the composite's class name and, per part, its (library, class), or None
    for an optional part saved absent (diffusers writes `[null, null]`)."""

    class_name: str
    parts: dict[str, tuple[str, str] | None]


def save_parts(parts: Mapping[str, nn.Module | dict[str, Any] | None], out: str | os.PathLike, class_name: str,
               meta: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a model made of parts in diffusers' layout; each part's folder loads alone (see the module doc).
    `extra` adds keys that are not parts to model_index.json (each named with a leading "_", which diffusers
    and `read_parts` pass over): a part kept by reference, say, instead of copied."""
    out = Path(out)
    if any(not k.startswith("_") for k in extra or {}):
        raise CheckpointError(f"model_index.json keys that are not parts start with '_': {sorted(extra or {})}")
    index: dict[str, Any] = {"_class_name": class_name, "_diffusers_version": DIFFUSERS_LAYOUT, **(extra or {})}
    for name, part in parts.items():
        if not name.isidentifier() or name.startswith("_"):  # a folder name and a pipeline attribute in diffusers
            raise CheckpointError(f"part name {name!r} must be a Python identifier not starting with '_'")
        if part is None:
            index[name] = [None, None]
        elif isinstance(part, nn.Module):
            save_model(part, out / name, meta)
            cfg = read_config(out / name)
            hf = "model_type" in cfg and cfg.get("architectures")  # saved in the HF layout: transformers loads it
            if hf:
                index[name] = ["transformers", cfg["architectures"][0]]
            elif isinstance(cfg.get("_class_name"), str):  # saved in diffusers' layout
                index[name] = ["diffusers", cfg["_class_name"]]
            else:
                index[name] = ["zupu", type(part).__name__]
        elif isinstance(part, dict) and isinstance(part.get("_class_name"), str):
            write_json(out / name / SCHEDULER_CONFIG, {"_diffusers_version": DIFFUSERS_LAYOUT, **part})
            index[name] = ["diffusers", part["_class_name"]]
        else:
            raise CheckpointError(f"part {name!r} is a {type(part).__name__}: a part is an nn.Module, a scheduler"
                                  " config (a dict of diffusers' constructor arguments and '_class_name'), or None")
    write_json(out / MODEL_INDEX, index)  # last: a folder with a model_index.json is complete
    return out


def read_parts(path: str | os.PathLike) -> PartsIndex:
    """Read `model_index.json` (zupu's or diffusers'); keys that are not parts (settings such as
    `requires_safety_checker`, `_name_or_path`) are left out."""
    path = Path(path)
    where = path / MODEL_INDEX
    if not where.is_file():
        raise CheckpointError(f"{where} is missing: not a folder of a model made of parts")
    cfg = read_config(where)
    if not isinstance(cfg.get("_class_name"), str):
        raise CheckpointError(f"{where} has no _class_name naming the composite's class")
    parts: dict[str, tuple[str, str] | None] = {}
    for name, entry in cfg.items():
        if name.startswith("_") or not isinstance(entry, list):
            continue
        if entry == [None, None]:
            parts[name] = None
        elif len(entry) == 2 and all(isinstance(e, str) for e in entry):
            parts[name] = (entry[0], entry[1])
        else:
            raise CheckpointError(f"{where}: part {name!r} is {entry!r}, expected [library, class] or [null, null]")
    return PartsIndex(cfg["_class_name"], parts)


def load_part(path: str | os.PathLike, name: str, dtype: torch.dtype | None = torch.float32) -> Any:
    """One part of a model made of parts: a model (as `load_model` loads it), a scheduler config dict, or None."""
    path = Path(path)
    index = read_parts(path)
    if name not in index.parts:
        raise CheckpointError(f"{path / MODEL_INDEX} has no part {name!r}; its parts: {', '.join(index.parts)}")
    if index.parts[name] is None:
        return None
    library, cls = index.parts[name]
    folder = path / name
    if (folder / SCHEDULER_CONFIG).is_file():
        cfg = read_config(folder / SCHEDULER_CONFIG)
        if cfg.get("_class_name") != cls:
            raise CheckpointError(f"{folder / SCHEDULER_CONFIG} is a {cfg.get('_class_name')!r}, but {MODEL_INDEX} "
                                  f"says part {name!r} is {cls!r}")
        return cfg
    if (folder / CONFIG).is_file():
        cfg = read_config(folder)
        model_type = cfg.get("model_type") or cfg.get("_class_name")
        if isinstance(cfg.get("zupu"), dict) or (model_type and registry.member_for_model_type(model_type)):
            return load_model(folder, dtype)
    elif not folder.is_dir():
        raise CheckpointError(f"{folder} is missing: {MODEL_INDEX} lists part {name!r} ({library} {cls})")
    raise CheckpointError(f"{folder}: part {name!r} is {library}'s {cls}, which zupu does not load (it loads zupu "
                          "models, the transformers architectures of its members, and scheduler configs)")


def load_parts(path: str | os.PathLike, dtype: torch.dtype | None = torch.float32) -> dict[str, Any]:
    """Every part of a model made of parts, by name (see `load_part`)."""
    return {name: load_part(path, name, dtype) for name in read_parts(path).parts}
