"""Tic-tac-toe with OpenSpiel's interface, so that code written against it (the search, the agent, the solver,
`zupu play`) also takes OpenSpiel's own `tic_tac_toe`, and later its `connect_four` and `go`.

The names and conventions are OpenSpiel's (`open_spiel/games/tic_tac_toe`): player 0 is x and moves first;
action `a` is the cell at row `a // 3`, column `a % 3`; `current_player()` is -4 (kTerminalPlayerId) once the
game is over; `returns()` is [+1, -1], [-1, +1] or [0, 0]; `observation_tensor(player)` is three 3x3 planes
(empty, o, x), the same for both players; `str(state)` is the board as rows of `.`, `o`, `x`. A test drives
both implementations through every position and compares them.
"""

from __future__ import annotations

from zupu.errors import IllegalMove

TERMINAL = -4  # OpenSpiel's kTerminalPlayerId
EMPTY, NOUGHT, CROSS = 0, 1, 2  # OpenSpiel's CellState, and the planes of the observation tensor
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


class TicTacToeState:
    def __init__(self, game: TicTacToe):
        self.game = game
        self.board = [EMPTY] * 9
        self.moves: list[int] = []
        self.winner: int | None = None  # the player who completed a line

    def get_game(self) -> TicTacToe:
        return self.game

    def current_player(self) -> int:
        return TERMINAL if self.is_terminal() else len(self.moves) % 2

    def is_terminal(self) -> bool:
        return self.winner is not None or len(self.moves) == 9

    def legal_actions(self) -> list[int]:
        return [] if self.is_terminal() else [a for a in range(9) if self.board[a] == EMPTY]

    def apply_action(self, action: int) -> None:
        if action not in self.legal_actions():
            why = "the game is over" if self.is_terminal() else f"legal moves are {self.legal_actions()}"
            raise IllegalMove(f"tic-tac-toe: {action!r} is not a legal move here ({why})")
        player = len(self.moves) % 2
        self.board[action] = CROSS if player == 0 else NOUGHT
        self.moves.append(action)
        if any(all(self.board[c] == self.board[action] for c in line) for line in LINES if action in line):
            self.winner = player

    def returns(self) -> list[float]:
        if self.winner is None:
            return [0.0, 0.0]
        return [1.0, -1.0] if self.winner == 0 else [-1.0, 1.0]

    def history(self) -> list[int]:
        return list(self.moves)

    def clone(self) -> TicTacToeState:
        other = TicTacToeState(self.game)
        other.board, other.moves, other.winner = list(self.board), list(self.moves), self.winner
        return other

    def observation_tensor(self, player: int = 0) -> list[float]:
        """Planes (empty, o, x), flattened as OpenSpiel flattens its [3, 3, 3] tensor; alike for both players."""
        return [float(cell == plane) for plane in (EMPTY, NOUGHT, CROSS) for cell in self.board]

    def action_to_string(self, player: int, action: int) -> str:
        return f"{'xo'[player]}({action // 3},{action % 3})"

    def __str__(self) -> str:
        marks = {EMPTY: ".", NOUGHT: "o", CROSS: "x"}
        return "\n".join("".join(marks[c] for c in self.board[r * 3:r * 3 + 3]) for r in range(3))


class TicTacToe:
    """The game object: OpenSpiel's `pyspiel.load_game("tic_tac_toe")` answers the same questions."""

    short_name = "tic_tac_toe"

    def new_initial_state(self) -> TicTacToeState:
        return TicTacToeState(self)

    def num_distinct_actions(self) -> int:
        return 9

    def observation_tensor_shape(self) -> list[int]:
        return [3, 3, 3]
