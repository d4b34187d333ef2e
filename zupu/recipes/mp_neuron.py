"""M-P neuron recipe: hand-wired logic, checked against the truth tables (nothing is learned)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from zupu.models.mp_neuron import PRESETS, MPNetwork
from zupu.recipe import Milestone, Recipe
from zupu.train.device import of, to_device

TRUTH = {
    "and": lambda a, b: a & b,
    "or": lambda a, b: a | b,
    "nand": lambda a, b: 1 - (a & b),
    "xor": lambda a, b: a ^ b,
}


def all_inputs(n: int) -> torch.Tensor:
    """Every 0/1 input of n units: the rows of a truth table, (2^n, n)."""
    return torch.tensor(list(itertools.product((0, 1), repeat=n)), dtype=torch.float32)


def truth_table_acc(net: MPNetwork, fn) -> float:
    rows = all_inputs(net.config.n_inputs)
    want = torch.tensor([fn(*map(int, r)) for r in rows], dtype=torch.float32)
    rows, want = to_device((rows, want), of(net))
    return (net(rows)[:, 0] == want).float().mean().item()


@dataclass
class Settings:
    gate: str = "xor"  # the network saved in the run directory


class Logic(Recipe):
    name = "logic"
    summary = "AND, OR, NOT, NAND by single units and XOR by a two-layer net with absolute inhibition"
    Settings = Settings
    milestone = Milestone("truth_tables_correct", 1.0, paper="McCulloch & Pitts (1943): nets realise any logical "
                          "expression")
    quick_milestone = milestone  # the quick run is the whole recipe: 1.0 / 1.0 / 1.0 at seeds 0, 1, 2 (2026-12-04)
    quick_seconds = 1.0  # 0.2-0.7 s of CPU on one thread
    tiny = {}  # nothing is learned: the recipe takes milliseconds as it is

    def build(self, s: Settings) -> MPNetwork:
        return MPNetwork(PRESETS[s.gate])

    def train(self, model: MPNetwork, s: Settings, run) -> dict:
        tables = {**TRUTH, "not": lambda a: 1 - a}
        out = {f"{g}_acc": truth_table_acc(MPNetwork(PRESETS[g]).to(of(model)), fn) for g, fn in tables.items()}
        run.log(0, **out)
        out["truth_tables_correct"] = float(all(v == 1.0 for v in out.values()))
        return out

    def evaluate(self, model: MPNetwork, s: Settings) -> dict:
        fn = TRUTH.get(s.gate, lambda a: 1 - a)
        return {f"{s.gate}_acc": truth_table_acc(model, fn)}

    def example(self, s: Settings) -> tuple[torch.Tensor]:
        return (all_inputs(PRESETS[s.gate].n_inputs),)


RECIPES = [Logic()]
