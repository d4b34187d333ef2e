"""What a recipe is: data + settings + training + the milestone number it must reach.

A member's recipes module (`zupu/recipes/<member>.py`) defines subclasses of `Recipe` and lists
them in `RECIPES` (the first is the default). `zupu train`, `zupu eval` and `zupu tour` only speak
this interface.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from zupu.errors import SettingError, did_you_mean

if TYPE_CHECKING:
    from torch import nn

    from zupu.train.run import Run


@dataclass(frozen=True)
class Milestone:
    """The number a recipe must reach: `metric` in the final metrics against `target`."""

    metric: str
    target: float
    higher_is_better: bool = True
    paper: str = ""  # what the paper (or the reference peer) reported, for the report

    def judge(self, metrics: dict[str, Any]) -> dict[str, Any]:
        value = metrics.get(self.metric)
        ok = value is not None and not math.isnan(value)
        passed = ok and (value >= self.target if self.higher_is_better else value <= self.target)
        return {
            "name": self.metric,
            "value": value,
            "target": self.target,
            "op": ">=" if self.higher_is_better else "<=",
            "passed": bool(passed),
            "paper": self.paper,
        }


class Recipe:
    """Base class. Subclasses set the class attributes and implement build/train/evaluate."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Settings: ClassVar[type]  # a dataclass of defaults; `--set key=value` overrides fields
    milestone: ClassVar[Milestone]
    quick: ClassVar[dict[str, Any]] = {}  # overrides for `--quick` and the tour
    # what the quick settings reach, measured at seeds 0, 1 and 2 (None: judged by the full `milestone`)
    quick_milestone: ClassVar[Milestone | None] = None
    # seconds the quick run takes on 2 idle cores, declared so that the tour's total budget is a sum, not a timing
    quick_seconds: ClassVar[float | None] = None
    # overrides that train, evaluate and save in seconds, for the contract test (tests/test_contract.py);
    # {} when the defaults already do; None (the default) is a recipe that has not declared them
    tiny: ClassVar[dict[str, Any] | None] = None
    in_tour: ClassVar[bool] = True
    # whether `train` can run data-parallel under torchrun (`zupu.train.distributed`): all its training goes
    # through the Trainer (or the classifier loop) on batches the ranks can share
    data_parallel: ClassVar[bool] = False

    def milestone_for(self, quick: bool) -> Milestone:
        """The milestone a run is judged by: the quick one for `--quick` runs where the recipe states one."""
        return self.quick_milestone if quick and self.quick_milestone is not None else self.milestone

    def settings(self, quick: bool = False, overrides: dict[str, Any] | None = None) -> Any:
        values = dict(self.quick) if quick else {}
        values.update(overrides or {})
        return apply_settings(self.Settings(), values, f"recipe {self.name!r}")

    def build(self, s: Any) -> nn.Module:
        raise NotImplementedError

    def train(self, model: nn.Module, s: Any, run: Run) -> dict[str, Any]:
        """Train `model` in place, log the curve to `run`, return the final metrics."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, s: Any) -> dict[str, Any]:
        """Score a trained model; `zupu eval RUN` calls this, and each metric it returns must be in what
        `train` returned, with the same value (the contract test checks it)."""
        raise NotImplementedError

    def example(self, s: Any) -> tuple[Any, ...]:
        """The positional arguments of one forward call of the model `build(s)` makes: a few real inputs,
        so that `zupu.from_pretrained(run)(*recipe.example(settings))` runs (the contract test checks it)."""
        raise NotImplementedError(f"recipe {self.name!r} gives no example input; define {type(self).__name__}.example")

    def figures(self, model: nn.Module, s: Any, run: Run) -> None:
        """Write the recipe's own PNGs into the run directory (optional)."""


def _coerce(field: dataclasses.Field, raw: Any, where: str) -> Any:
    if not isinstance(raw, str):
        return raw
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    try:
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(float(raw)) if float(raw).is_integer() else int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            return tuple(int(x) if x.strip().lstrip("-").isdigit() else x.strip() for x in raw.split(",") if x)
        if "None" in kind and raw.lower() == "none":
            return None
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise SettingError(f"{where}: setting {field.name}={raw!r} is not a valid {kind}") from None
    return raw


def apply_settings(settings: Any, values: dict[str, Any], where: str) -> Any:
    """Return a copy of the settings dataclass with `values` applied, type-checked by field."""
    fields = {f.name: f for f in dataclasses.fields(settings)}
    for key in values:
        if key not in fields:
            raise SettingError(
                f"{where} has no setting {key!r}{did_you_mean(key, list(fields))}; "
                f"settings are: {', '.join(fields)}"
            )
    return dataclasses.replace(settings, **{k: _coerce(fields[k], v, where) for k, v in values.items()})


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """`["lr=0.1", "epochs=3"]` -> `{"lr": "0.1", "epochs": "3"}`."""
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise SettingError(f"--set expects key=value, got {p!r}")
        out[key.strip()] = value.strip()
    return out
