"""An agent: a trained policy-value network plus PUCT search, deterministic for a given position.

    from zupu.games import load_agent
    agent = load_agent("runs/alphazero-tic-tac-toe")
    action = agent.move(state)     # a zupu state or an OpenSpiel state (pyspiel.load_game("tic_tac_toe"))

`move` searches with the run's `eval_simulations` and no noise, then plays the most visited move: the same
position always gets the same move, which is what lets the recipe prove the agent's play exhaustively.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zupu.errors import CheckpointError, GameError, IllegalMove
from zupu.games.boards import BoardGame, board_game
from zupu.sampling.mcts import MCTS, Node, best_index
from zupu.train.device import of


class Agent:
    def __init__(self, model: nn.Module, game: BoardGame, simulations: int, c_puct: float):
        self.model, self.game = model.eval(), game
        self.mcts = MCTS(self.evaluate, game.num_actions, simulations, c_puct)

    @torch.no_grad()
    def evaluate(self, states: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """The network on states: move probabilities (illegal moves are dropped by the search) and values."""
        logits, values = self.model(self.game.encode(states).to(of(self.model)))
        return torch.softmax(logits.double(), -1).cpu().numpy(), values.double().cpu().numpy()

    def search(self, states: Sequence[Any]) -> list[Node]:
        for state in states:
            if state.is_terminal():
                raise IllegalMove(f"the game is over, there is no move to make:\n{state}")
        return self.mcts.search(states)

    def moves(self, states: Sequence[Any]) -> list[int]:
        """The move for each state, all searched together (one network call per simulation)."""
        return [int(root.actions[best_index(root)]) for root in self.search(states)]

    def move(self, state: Any) -> int:
        return self.moves([state])[0]


def load_agent(run_dir: str | Path, simulations: int | None = None) -> Agent:
    """The agent a run trained: its network, game and search settings (`simulations` overrides the run's)."""
    from zupu import registry
    from zupu.checkpoint import load_model, read_config

    meta = read_config(Path(run_dir)).get("zupu") or {}
    if "member" not in meta or "recipe" not in meta:
        raise CheckpointError(f"{run_dir}: config.json has no zupu run entry (member, recipe): not a zupu run")
    settings = registry.get(meta["member"]).recipe(meta["recipe"]).settings(overrides=meta.get("settings") or {})
    if not hasattr(settings, "game"):
        raise GameError(f"{run_dir} is a {meta['member']} run, which plays no game; train one with "
                        "`zupu train alphazero`")
    return Agent(load_model(run_dir), board_game(settings.game), simulations or settings.eval_simulations,
                 settings.c_puct)
