"""Exact answers for small games by full minimax: every reachable position, its value, its optimal moves, and
every line an opponent can play against a fixed policy. They turn "the agent plays well" into a proof.

A position is a state reachable from the initial one by legal moves, identified by its board and the player to
move (`key`), however many move orders reach it. Tic-tac-toe has 5,478 of them, 4,520 with a move still to
make (958 finished: won, or a full board); `test_alphazero` checks both numbers. A move is optimal when its
minimax value equals the position's: it keeps a win a win and a draw a draw (in a lost position every move is
optimal; a slower win counts as a win).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any


def key(state: Any) -> str:
    return f"{state.current_player()}\n{state}"


def positions(game: Any) -> dict[str, Any]:
    """Every reachable position, finished or not, by its key."""
    found: dict[str, Any] = {}
    stack = [game.new_initial_state()]
    while stack:
        state = stack.pop()
        k = key(state)
        if k in found:
            continue
        found[k] = state
        for action in state.legal_actions():
            child = state.clone()
            child.apply_action(action)
            stack.append(child)
    return found


def solve(game: Any) -> dict[str, float]:
    """The minimax value, for player 0, of every reachable position (two players, zero-sum)."""
    values: dict[str, float] = {}

    def value(state: Any) -> float:
        k = key(state)
        if k not in values:
            if state.is_terminal():
                values[k] = state.returns()[0]
            else:
                children = [value(child(state, a)) for a in state.legal_actions()]
                values[k] = max(children) if state.current_player() == 0 else min(children)
        return values[k]

    value(game.new_initial_state())
    return values


def child(state: Any, action: int) -> Any:
    out = state.clone()
    out.apply_action(action)
    return out


def optimal_actions(state: Any, values: dict[str, float]) -> list[int]:
    """The moves that keep the position's minimax value."""
    return [a for a in state.legal_actions() if values[key(child(state, a))] == values[key(state)]]


def lines_against(game: Any, policy: Callable[[Any], int], player: int) -> Counter:
    """Play `policy` as `player` against every possible sequence of the opponent's moves; count how the lines end
    for `player`: {"win": n, "draw": n, "loss": n}. One line per distinct sequence of opponent moves. The
    policy is asked once per position (it must be a function of the position, as a deterministic agent is)."""
    outcomes: Counter = Counter({"win": 0, "draw": 0, "loss": 0})
    chosen: dict[str, int] = {}
    stack = [game.new_initial_state()]
    while stack:
        state = stack.pop()
        if state.is_terminal():
            r = state.returns()[player]
            outcomes["win" if r > 0 else "loss" if r < 0 else "draw"] += 1
        elif state.current_player() == player:
            k = key(state)
            if k not in chosen:
                chosen[k] = policy(state)
            stack.append(child(state, chosen[k]))
        else:
            stack.extend(child(state, a) for a in state.legal_actions())
    return outcomes
