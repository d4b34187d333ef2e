"""`zupu play RUN`: play a trained game agent in the terminal.

You type a move's number: a free cell's (shown on the board) for tic-tac-toe and Go (Go's pass is the number
after the last cell, or `pass`), a column's (shown under the board) for Connect-4. A move the rules do not allow
is refused with the legal ones listed, and you are asked again. `q` (or the end of input) leaves the game.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zupu.games.boards import BoardGame


def show(state: Any, game: BoardGame) -> str:
    """The board as people draw it: stones, and each free cell's move number (Connect-4: column numbers below)."""
    width = len(str(game.num_actions - 1))
    board = game.board(state)
    cells = {game.cell(a): a for a in range(game.num_actions) if game.cell(a) is not None}
    lines = [" ".join((str(cells[(r, c)]) if mark == "." and (r, c) in cells else mark).rjust(width)
                      for c, mark in enumerate(row)) for r, row in enumerate(board)]
    if game.column_actions:
        lines.append(" ".join(str(c).rjust(width) for c in range(game.columns)))
    elif game.num_actions > game.rows * game.columns:
        lines.append(f"pass: {game.num_actions - 1}")
    return "\n".join(lines)


def parse(text: str, game: BoardGame) -> int | None:
    if text.isdigit():
        return int(text)
    if text.lower() == "pass" and game.num_actions > game.rows * game.columns:
        return game.num_actions - 1
    return None


def ask(state: Any, game: BoardGame) -> int | None:
    """The person's move, asked until it is legal; None when they quit or input ends."""
    legal = state.legal_actions()
    while True:
        try:
            text = input(f"your move ({' '.join(map(str, legal))}, q quits): ").strip()
        except EOFError:
            print()
            return None
        if text.lower() in ("q", "quit", "exit"):
            return None
        if parse(text, game) in legal:
            return parse(text, game)
        print(f"illegal move {text!r}: legal moves are {', '.join(map(str, legal))}")


def cmd_play(args: argparse.Namespace) -> int:
    from zupu.games import load_agent

    agent = load_agent(args.run, args.simulations)
    state = agent.game.new_game().new_initial_state()
    you = "xo".index(args.side)
    print(f"you play {agent.game.marks[you]} ({agent.game.marks[0]} moves first); the agent searches "
          f"{agent.mcts.simulations} simulations a move")
    while not state.is_terminal():
        print(show(state, agent.game))
        if state.current_player() == you:
            action = ask(state, agent.game)
            if action is None:
                print("game abandoned")
                return 0
        else:
            action = agent.move(state)
            print(f"agent plays {action}")
        state.apply_action(action)
    print(show(state, agent.game))
    mine = state.returns()[you]
    print("you win" if mine > 0 else "the agent wins" if mine < 0 else "draw")
    return 0


def add_parser(subparsers: Any) -> None:
    s = subparsers.add_parser("play", help="play a trained game agent (alphazero run) in the terminal")
    s.add_argument("run", help="a run directory of `zupu train alphazero`")
    s.add_argument("--side", choices=["x", "o"], default="x",
                   help="your side: x moves first (Go: x is black, X on the board); default: x")
    s.add_argument("--simulations", type=int, default=None, help="the agent's search per move (default: the run's)")
    s.set_defaults(func=cmd_play)
