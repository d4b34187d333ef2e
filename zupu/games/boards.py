"""The games the agent knows, and how a position is shown to the network.

A `BoardGame` names a game (OpenSpiel's short name), makes its initial state, and encodes states, zupu's or
OpenSpiel's, as the network's input: the board from the view of the player to move (plane 0 their stones,
plane 1 the opponent's), so one network plays both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zupu.errors import GameError, did_you_mean
from zupu.games.tictactoe import CROSS, NOUGHT, TicTacToe


def game_name(state: Any) -> str:
    """OpenSpiel's short name of the state's game: zupu's games carry it, OpenSpiel's in their game type."""
    game = state.get_game()
    return getattr(game, "short_name", None) or game.get_type().short_name


@dataclass(frozen=True)
class BoardGame:
    name: str
    size: int  # the board is size x size
    num_actions: int
    new_game: Callable[[], Any]  # -> the game object, with new_initial_state()
    mover_plane: tuple[int, int]  # the observation planes of player 0's and player 1's stones

    def encode(self, states: Sequence[Any]) -> torch.Tensor:
        """States -> (B, 2, size, size): the mover's stones, then the opponent's."""
        planes = np.empty((len(states), 2, self.size, self.size), dtype=np.float32)
        for i, state in enumerate(states):
            if game_name(state) != self.name:
                raise GameError(f"a {game_name(state)} state given to a {self.name} agent")
            obs = np.asarray(state.observation_tensor(0), dtype=np.float32).reshape(-1, self.size, self.size)
            mover = len(state.history()) % 2  # alternating moves; also defined once the game is over
            planes[i, 0], planes[i, 1] = obs[self.mover_plane[mover]], obs[self.mover_plane[1 - mover]]
        return torch.from_numpy(planes)


GAMES = {
    "tic_tac_toe": BoardGame("tic_tac_toe", 3, 9, TicTacToe, mover_plane=(CROSS, NOUGHT)),
}


def board_game(name: str) -> BoardGame:
    if name not in GAMES:
        raise GameError(f"unknown game {name!r}{did_you_mean(name, list(GAMES))}; games: {', '.join(GAMES)}")
    return GAMES[name]
