"""The games the agent knows, and how a position is shown to the network.

A `BoardGame` names a game (OpenSpiel's short name), makes its initial state, and encodes states, zupu's or
OpenSpiel's, as the network's input: the board from the view of the player to move (plane 0 their stones,
plane 1 the opponent's), so one network plays both sides. Go adds a third plane, all ones when white moves: komi
makes the two colours' positions worth different amounts, so the network must know which it plays.

    tic_tac_toe    3x3, 9 actions (cells, row by row from the top), zupu's own TicTacToe (OpenSpiel's rules)
    connect_four   6x7, 7 actions (columns); OpenSpiel's, rows counted from the bottom
    go             5x5, 26 actions (cells row by row from the bottom, then pass); OpenSpiel's, komi 0.5 (area
                   scoring; no draws), games capped at 50 moves as OpenSpiel does for this size

Symmetries (zupu.games.symmetry): the 8 of a square board for tic-tac-toe and Go (pass stays pass), only the
left-right mirror for Connect-4 (gravity has a direction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zupu.errors import GameError, did_you_mean
from zupu.games.symmetry import cell_permutation
from zupu.games.tictactoe import CROSS, NOUGHT, TicTacToe


def game_name(state: Any) -> str:
    """OpenSpiel's short name of the state's game: zupu's games carry it, OpenSpiel's in their game type."""
    game = state.get_game()
    return getattr(game, "short_name", None) or game.get_type().short_name


def open_spiel(spec: str) -> Callable[[], Any]:
    def load() -> Any:
        import pyspiel

        return pyspiel.load_game(spec)
    return load


@dataclass(frozen=True)
class BoardGame:
    name: str
    rows: int
    columns: int
    num_actions: int
    new_game: Callable[[], Any]  # -> the game object, with new_initial_state()
    stone_plane: tuple[int, int]  # the observation planes of player 0's and player 1's stones
    spec: str = ""  # what pyspiel.load_game takes (its MCTSBot plays this game)
    colour_plane: bool = False  # a third input plane: 1 when player 1 moves
    transforms: tuple[int, ...] = (0,)  # the board symmetries (zupu.games.symmetry numbering) the rules keep
    column_actions: bool = False  # an action is a column (Connect-4), not a cell (then pass, if any, last)
    top_row_first: bool = True  # the observation's row 0 is the top of the board as people draw it
    marks: str = "xo"  # player 0's and player 1's stones on the terminal board

    @property
    def in_channels(self) -> int:
        return 3 if self.colour_plane else 2

    def encode(self, states: Sequence[Any]) -> torch.Tensor:
        """States -> (B, in_channels, rows, columns): the mover's stones, the opponent's (then the colour)."""
        planes = np.zeros((len(states), self.in_channels, self.rows, self.columns), dtype=np.float32)
        for i, state in enumerate(states):
            if game_name(state) != self.name:
                raise GameError(f"a {game_name(state)} state given to a {self.name} agent")
            obs = np.asarray(state.observation_tensor(0), dtype=np.float32).reshape(-1, self.rows, self.columns)
            mover = len(state.history()) % 2  # alternating moves (Go's pass is a move); also once the game is over
            planes[i, 0], planes[i, 1] = obs[self.stone_plane[mover]], obs[self.stone_plane[1 - mover]]
            if self.colour_plane:
                planes[i, 2] = mover
        return torch.from_numpy(planes)

    def action_permutation(self, k: int) -> torch.Tensor:
        """`perm` such that a policy over actions, seen through board transform `k`, is `policy[perm]`."""
        if self.column_actions:  # only the mirror keeps Connect-4's rules
            columns = torch.arange(self.columns)
            return columns.flip(0) if k >= 4 else columns
        cells = cell_permutation(self.rows, k)
        return torch.cat([cells, torch.arange(self.rows * self.columns, self.num_actions)])  # pass stays pass

    def board(self, state: Any) -> list[list[str]]:
        """The stones as people draw the board: rows top to bottom, '.' for a free point."""
        obs = np.asarray(state.observation_tensor(0)).reshape(-1, self.rows, self.columns)
        grid = [["." for _ in range(self.columns)] for _ in range(self.rows)]
        for player, plane in enumerate(self.stone_plane):
            for r, c in zip(*np.nonzero(obs[plane]), strict=True):
                grid[r][c] = self.marks[player]
        return grid if self.top_row_first else grid[::-1]

    def cell(self, action: int) -> tuple[int, int] | None:
        """Where on the drawn board (row, column) a cell action puts a stone; None for pass and column games."""
        if self.column_actions or action >= self.rows * self.columns:
            return None
        r, c = divmod(action, self.columns)
        return (r, c) if self.top_row_first else (self.rows - 1 - r, c)


GAMES = {
    "tic_tac_toe": BoardGame("tic_tac_toe", 3, 3, 9, TicTacToe, stone_plane=(CROSS, NOUGHT), spec="tic_tac_toe",
                             transforms=tuple(range(8))),
    "connect_four": BoardGame("connect_four", 6, 7, 7, open_spiel("connect_four"), stone_plane=(0, 1),
                              spec="connect_four", transforms=(0, 4), column_actions=True, top_row_first=False),
    "go": BoardGame("go", 5, 5, 26, open_spiel("go(board_size=5,komi=0.5)"), stone_plane=(0, 1),
                    spec="go(board_size=5,komi=0.5)", colour_plane=True, transforms=tuple(range(8)),
                    top_row_first=False, marks="XO"),
}


def board_game(name: str) -> BoardGame:
    if name not in GAMES:
        raise GameError(f"unknown game {name!r}{did_you_mean(name, list(GAMES))}; games: {', '.join(GAMES)}")
    return GAMES[name]
