"""Self-play (AlphaGo Zero): the current network, searching, plays games against itself, and every position it
meets becomes a training example (the board, the search's probabilities pi, the game's outcome z for the player
who was to move). Examples go into a replay buffer of the most recent positions, from which training samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from zupu.games.boards import BoardGame
from zupu.sampling.mcts import MCTS


def self_play(mcts: MCTS, game: BoardGame, games: int, temperature_moves: int,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]:
    """Play `games` games at once, all searched together, with noise at every root. The first
    `temperature_moves` moves of a game are drawn in proportion to the visit counts (T = 1), so the games
    differ; later ones are the most visited (T -> 0). The policy target is always the visit distribution
    (T = 1), as in the paper. Returns planes (N, C, H, W), pi (N, A), z (N,) and player 0's result per game."""
    states = [game.new_game().new_initial_state() for _ in range(games)]
    records: list[list[tuple[torch.Tensor, np.ndarray, int]]] = [[] for _ in range(games)]
    active = list(range(games))
    while active:
        roots = mcts.search([states[g] for g in active], rng)
        planes = game.encode([states[g] for g in active])
        for j, (g, root) in enumerate(zip(active, roots, strict=True)):
            state = states[g]
            pi = mcts.policy(root, 1.0)
            if len(state.history()) < temperature_moves:
                action = int(rng.choice(len(pi), p=pi))
            else:
                action = int(np.argmax(mcts.policy(root, 0.0)))
            records[g].append((planes[j], pi, state.current_player()))
            state.apply_action(action)
        active = [g for g in active if not states[g].is_terminal()]
    examples = [(p, pi, states[g].returns()[player]) for g in range(games) for p, pi, player in records[g]]
    return (torch.stack([e[0] for e in examples]), torch.from_numpy(np.stack([e[1] for e in examples])).float(),
            torch.tensor([e[2] for e in examples], dtype=torch.float32),
            [states[g].returns()[0] for g in range(games)])


class ReplayBuffer:
    """The most recent `capacity` examples, sampled uniformly."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.planes: torch.Tensor | None = None
        self.pi = self.z = torch.empty(0)

    def __len__(self) -> int:
        return len(self.z)

    def add(self, planes: torch.Tensor, pi: torch.Tensor, z: torch.Tensor) -> None:
        if self.planes is None:
            self.planes, self.pi, self.z = planes[-self.capacity:], pi[-self.capacity:], z[-self.capacity:]
            return
        self.planes = torch.cat([self.planes, planes])[-self.capacity:]
        self.pi = torch.cat([self.pi, pi])[-self.capacity:]
        self.z = torch.cat([self.z, z])[-self.capacity:]

    def sample(self, batch_size: int, generator: torch.Generator) -> Sequence[Any]:
        i = torch.randint(len(self), (batch_size,), generator=generator)
        return self.planes[i], self.pi[i], self.z[i]


# states with the teacher to move, and their game numbers -> the teacher's move probabilities over all actions
Teacher = Callable[[Sequence[Any], Sequence[int]], list[np.ndarray]]


def teacher_play(teacher: Teacher, game: BoardGame, games: int, opening_moves: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AlphaGo's first stage learned from a strong player's games (KGS experts there; here a solver or OpenSpiel's
    MCTS). The teacher plays both sides after `opening_moves` uniformly random moves (so the games differ);
    every position it meets becomes an example: the board, the teacher's move probabilities, the outcome z for
    the player who was to move. Returns planes (N, C, H, W), pi (N, A), z (N,)."""
    states = [game.new_game().new_initial_state() for _ in range(games)]
    records: list[list[tuple[torch.Tensor, np.ndarray, int]]] = [[] for _ in range(games)]
    active = list(range(games))
    while active:
        opening = [g for g in active if len(states[g].history()) < opening_moves]
        for g in opening:
            states[g].apply_action(int(rng.choice(states[g].legal_actions())))
        taught = [g for g in active if g not in set(opening)]
        if taught:
            pis = teacher([states[g] for g in taught], taught)
            planes = game.encode([states[g] for g in taught])
            for j, (g, pi) in enumerate(zip(taught, pis, strict=True)):
                records[g].append((planes[j], pi, states[g].current_player()))
                states[g].apply_action(int(rng.choice(len(pi), p=pi)))
        active = [g for g in active if not states[g].is_terminal()]
    examples = [(p, pi, states[g].returns()[player]) for g in range(games) for p, pi, player in records[g]]
    return (torch.stack([e[0] for e in examples]), torch.from_numpy(np.stack([e[1] for e in examples])).float(),
            torch.tensor([e[2] for e in examples], dtype=torch.float32))
