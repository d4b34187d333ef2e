"""Monte-Carlo tree search guided by a policy-value network: PUCT (Silver et al., AlphaGo Zero, Nature 2017,
https://doi.org/10.1038/nature24270; AlphaZero, Science 2018).

Each simulation walks from the root, at every node taking the action

    a = argmax_a  Q(s, a) + U(s, a),    U(s, a) = c_puct * P(s, a) * sqrt(N(s)) / (1 + N(s, a))

where N(s, a) counts the simulations through edge (s, a), Q(s, a) = W(s, a) / N(s, a) is their mean value for
the player who moves at s (0 while unvisited), P(s, a) the network's prior and N(s) the visits of s itself (its
expansion counts one, as in OpenSpiel's MCTS, so the prior already orders the first step below a new node). At
an unexpanded node the network gives (P, v); a finished game gives its returns instead; v is added to W along
the path, for each edge from the view of the player who moved there. At the root the prior is mixed with noise,
P = (1 - eps) P + eps Dir(alpha), so that self-play tries moves the network does not yet like. The search's
answer is the root's visit counts N(root, a); self-play trains the policy towards N^(1/T) / sum N^(1/T).

Leaf evaluation is batched across trees: `search` runs one simulation in every tree, then evaluates all their
new leaves in one network call. Self-play searches dozens of games at once and evaluation every position at
once, so batches are large, and each tree's search is exactly the sequential one, the same answer whatever the
batch. Virtual loss, which batches leaves within one tree, would change what the search finds at the small
simulation counts a 2-core machine affords; it pays for a single game on a large board (Go), which can come
later as an option here without changing this interface.

States follow OpenSpiel's interface (`clone`, `apply_action`, `legal_actions`, `is_terminal`, `returns`,
`current_player`), so zupu's games and OpenSpiel's are searched alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# states -> (priors (B, num_actions), values (B,)), each value for the player to move in that state
Evaluator = Callable[[Sequence[Any]], tuple[np.ndarray, np.ndarray]]


class Node:
    """A position in the tree, with the statistics of the edges below it (arrays over its legal actions)."""

    __slots__ = ("state", "player", "actions", "prior", "visits", "value_sum", "children", "count")

    def __init__(self, state: Any):
        self.state = state
        self.player = state.current_player()
        self.actions: np.ndarray | None = None  # None until expanded
        self.count = 0  # N(s)

    def expand(self, priors: np.ndarray) -> None:
        self.actions = np.asarray(self.state.legal_actions())
        p = priors[self.actions].astype(np.float64)
        total = p.sum()
        self.prior = p / total if total > 0 else np.full(len(p), 1 / len(p))
        self.visits = np.zeros(len(self.actions))
        self.value_sum = np.zeros(len(self.actions))
        self.children: list[Node | None] = [None] * len(self.actions)

    def select(self, c_puct: float) -> int:
        """The index (into `actions`) of the PUCT choice; ties go to the first."""
        q = np.divide(self.value_sum, self.visits, out=np.zeros_like(self.value_sum), where=self.visits > 0)
        u = c_puct * self.prior * math.sqrt(self.count) / (1 + self.visits)
        return int(np.argmax(q + u))


class MCTS:
    def __init__(self, evaluate: Evaluator, num_actions: int, simulations: int, c_puct: float = 1.5,
                 dirichlet_alpha: float = 0.0, dirichlet_epsilon: float = 0.25):
        if simulations < 1:
            raise ValueError(f"MCTS needs at least one simulation, got simulations={simulations}")
        self.evaluate, self.num_actions, self.simulations = evaluate, num_actions, simulations
        self.c_puct, self.alpha, self.epsilon = c_puct, dirichlet_alpha, dirichlet_epsilon

    def search(self, states: Sequence[Any], rng: np.random.Generator | None = None) -> list[Node]:
        """Search from each state (none terminal) and return the roots. `rng` adds Dirichlet noise at the roots
        (self-play); without it the search is deterministic (evaluation, play)."""
        if any(s.is_terminal() for s in states):
            raise ValueError("MCTS.search: a root state is terminal; there is no move to search for")
        roots = [Node(s.clone()) for s in states]
        priors, _ = self.evaluate([r.state for r in roots])
        for root, p in zip(roots, priors, strict=True):
            root.expand(p)
            root.count = 1
            if rng is not None and self.epsilon > 0:
                noise = rng.dirichlet([self.alpha] * len(root.actions))
                root.prior = (1 - self.epsilon) * root.prior + self.epsilon * noise
        for _ in range(self.simulations):
            self.simulate(roots)
        return roots

    def simulate(self, roots: Sequence[Node]) -> None:
        """One simulation in every tree: descend, then evaluate the new leaves together, then back up."""
        pending: list[tuple[list[tuple[Node, int]], Node]] = []
        for root in roots:
            path, node = [], root
            while node.actions is not None:  # expanded: descend
                i = node.select(self.c_puct)
                path.append((node, i))
                child = node.children[i]
                if child is None:
                    state = node.state.clone()
                    state.apply_action(int(node.actions[i]))
                    child = node.children[i] = Node(state)
                node = child
                if node.state.is_terminal():
                    break
            if node.state.is_terminal():
                returns = node.state.returns()
                self.backup(path, node, lambda player, r=returns: r[player])
            else:
                pending.append((path, node))
        if not pending:
            return
        priors, values = self.evaluate([leaf.state for _, leaf in pending])
        for (path, leaf), p, v in zip(pending, priors, values, strict=True):
            leaf.expand(p)
            # a two-player zero-sum game: the leaf's value for its mover, negated for the other player
            self.backup(path, leaf, lambda player, v=float(v), mover=leaf.player: v if player == mover else -v)

    @staticmethod
    def backup(path: list[tuple[Node, int]], leaf: Node, value_for: Callable[[int], float]) -> None:
        leaf.count += 1
        for node, i in path:
            node.count += 1
            node.visits[i] += 1
            node.value_sum[i] += value_for(node.player)

    def policy(self, root: Node, temperature: float) -> np.ndarray:
        """The search probabilities over all actions: N^(1/T) normalised; T = 0 puts all on the most visited."""
        pi = np.zeros(self.num_actions)
        if temperature == 0:
            pi[root.actions[best_index(root)]] = 1.0
        else:
            scaled = (root.visits / root.visits.max()) ** (1 / temperature)
            pi[root.actions] = scaled / scaled.sum()
        return pi


def best_index(root: Node) -> int:
    """The most visited action's index; a tie goes to the higher prior, then to the first."""
    return int(np.lexsort((-np.arange(len(root.actions)), root.prior, root.visits))[-1])
