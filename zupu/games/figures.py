"""A search, drawn: the network's prior and the visit counts of a root's moves on the board."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zupu.games.boards import BoardGame
from zupu.sampling.mcts import Node
from zupu.train.plots import plt, save


def search_figure(state: Any, root: Node, game: BoardGame, path: Path, title: str) -> None:
    """Two boards: the prior P(s, a) and the visits N(s, a) per move, stones marked, the chosen move outlined."""
    prior, visits = np.full(game.num_actions, np.nan), np.full(game.num_actions, np.nan)
    prior[root.actions], visits[root.actions] = root.prior, root.visits
    marks = str(state).split("\n")
    chosen = int(root.actions[int(np.argmax(root.visits))])
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    for ax, values, name, fmt in ((axes[0], prior, "network prior P(s, a)", "{:.2f}"),
                                  (axes[1], visits, f"visits N(s, a), {int(root.visits.sum())} simulations",
                                   "{:.0f}")):
        ax.imshow(values.reshape(game.size, game.size), cmap="Blues", vmin=0)
        for cell in range(game.num_actions):
            r, c = divmod(cell, game.size)
            mark = marks[r][c]
            text = mark if mark != "." else fmt.format(values[cell])
            ax.text(c, r, text, ha="center", va="center", fontsize=18 if mark != "." else 11,
                    color="darkred" if mark != "." else "black")
        r, c = divmod(chosen, game.size)
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="orange", lw=3))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    save(fig, path)
