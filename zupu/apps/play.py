"""`zupu play RUN`: play a trained game agent in the terminal.

You type the number of a free cell (shown on the board); a move the rules do not allow is refused with the
legal ones listed, and you are asked again. `q` (or the end of input) leaves the game.
"""

from __future__ import annotations

import argparse
from typing import Any


def show(state: Any, size: int) -> str:
    """The board with each free cell showing its move number."""
    rows = str(state).split("\n")
    return "\n".join(" ".join(str(r * size + c) if mark == "." else mark for c, mark in enumerate(row))
                     for r, row in enumerate(rows))


def ask(state: Any) -> int | None:
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
        if text.isdigit() and int(text) in legal:
            return int(text)
        print(f"illegal move {text!r}: legal moves are {', '.join(map(str, legal))}")


def cmd_play(args: argparse.Namespace) -> int:
    from zupu.games import load_agent

    agent = load_agent(args.run, args.simulations)
    state = agent.game.new_game().new_initial_state()
    you = "xo".index(args.side)
    print(f"you play {args.side} (x moves first); the agent searches {agent.mcts.simulations} simulations a move")
    while not state.is_terminal():
        print(show(state, agent.game.size))
        if state.current_player() == you:
            action = ask(state)
            if action is None:
                print("game abandoned")
                return 0
        else:
            action = agent.move(state)
            print(f"agent plays {action}")
        state.apply_action(action)
    print(show(state, agent.game.size))
    mine = state.returns()[you]
    print("you win" if mine > 0 else "the agent wins" if mine < 0 else "draw")
    return 0


def add_parser(subparsers: Any) -> None:
    s = subparsers.add_parser("play", help="play a trained game agent (alphazero run) in the terminal")
    s.add_argument("run", help="a run directory of `zupu train alphazero`")
    s.add_argument("--side", choices=["x", "o"], default="x", help="your side; x moves first (default: x)")
    s.add_argument("--simulations", type=int, default=None, help="the agent's search per move (default: the run's)")
    s.set_defaults(func=cmd_play)
