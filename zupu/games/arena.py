"""Matches between players, and what their results say: scores with Wilson intervals, Elo differences.

A player is a function from the states of the games where it is to move (and those games' numbers) to its
moves, so a network agent searches all its games' positions together (batched leaf evaluation). OpenSpiel's
MCTSBot (UCT with c = 2, one random rollout per leaf, C++) is the yardstick: `mcts_player(game, simulations)`.

A match plays `games` games from random openings: each opening (a few uniformly random moves) is played twice,
the players swapping sides, so that neither colour nor a lucky opening decides it and two deterministic agents
still play different games. The score counts a win 1 and a draw 1/2. Its 95% interval is Wilson's score
interval (E. B. Wilson, JASA 1927), which stays inside [0, 1] near 0 and 1 where the normal one does not:

    (p + z^2 / 2n +- z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n),   z = 1.96

and an Elo difference is the logistic one, D = 400 log10(p / (1 - p)), p kept within 1/(2n) of 0 and 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from zupu.games.boards import BoardGame
from zupu.train.metrics import wilson_interval

Player = Callable[[Sequence[Any], Sequence[int]], list[int]]


def elo(score: float, n: int) -> float:
    """The Elo difference a score over n games implies (winner's side positive)."""
    p = min(max(score, 0.5 / n), 1 - 0.5 / n)
    return 400 * math.log10(p / (1 - p))


def mcts_player(game: BoardGame, simulations: int, seed: int = 0) -> Player:
    """OpenSpiel's MCTSBot with random rollouts, one bot per game (seeded `seed + game number`)."""
    import pyspiel

    spiel_game = pyspiel.load_game(game.spec)
    bots: dict[int, Any] = {}
    evaluator = pyspiel.RandomRolloutEvaluator(1, seed)  # kept alive here: the bots hold it by reference

    def play(states: Sequence[Any], games: Sequence[int]) -> list[int]:
        moves = []
        for state, g in zip(states, games, strict=True):
            if g not in bots:
                bots[g] = pyspiel.MCTSBot(spiel_game, evaluator, 2.0, simulations, 1000, False, seed + g, False)
            moves.append(int(bots[g].step(state)))
        return moves

    play.evaluator = evaluator  # type: ignore[attr-defined]
    return play


def agent_player(agent: Any) -> Player:
    """A zupu Agent (network + search, deterministic) as a player: its positions searched in one batch."""
    return lambda states, games: agent.moves(list(states))


def openings(game: BoardGame, count: int, moves: int, seed: int) -> list[list[int]]:
    """`count` openings of `moves` uniformly random legal moves (none ends the game)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        state, line = game.new_game().new_initial_state(), []
        for _ in range(moves):
            line.append(int(rng.choice(state.legal_actions())))
            state.apply_action(line[-1])
            if state.is_terminal():
                break
        if not state.is_terminal():
            out.append(line)
    return out


def play(first: Player, second: Player, game: BoardGame, lines: Sequence[Sequence[int]]) -> list[float]:
    """One game from each opening, `first` as player 0; player 0's return in each."""
    states = [game.new_game().new_initial_state() for _ in lines]
    for state, line in zip(states, lines, strict=True):
        for action in line:
            state.apply_action(action)
    while True:
        live = [g for g, s in enumerate(states) if not s.is_terminal()]
        if not live:
            return [s.returns()[0] for s in states]
        for player, mover in ((0, first), (1, second)):
            turn = [g for g in live if states[g].current_player() == player]
            if turn:
                for g, action in zip(turn, mover([states[g] for g in turn], turn), strict=True):
                    states[g].apply_action(action)


def match(agent: Player, opponent: Player, game: BoardGame, games: int, opening_moves: int,
          seed: int = 0) -> dict[str, float]:
    """`games` games (even), half with `agent` moving first; its score, interval and per-side scores."""
    lines = openings(game, games // 2, opening_moves, seed)
    as_first = [(r + 1) / 2 for r in play(agent, opponent, game, lines)]
    # the second half's games are numbered after the first's: an MCTSBot opponent gets fresh seeds there
    as_second = [(1 - r) / 2 for r in play(shifted(opponent, len(lines)), agent, game, lines)]
    score = float(np.mean(as_first + as_second))
    n = len(as_first) + len(as_second)
    lo, hi = wilson_interval(score * n, n)  # a draw counts half a win
    return {"score": score, "lo": lo, "hi": hi, "first": float(np.mean(as_first)),
            "second": float(np.mean(as_second)), "games": n}


def shifted(player: Player, offset: int) -> Player:
    """The same player numbering its games from `offset`."""
    return lambda states, games: player(states, [g + offset for g in games])
