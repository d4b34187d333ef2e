"""Figures of play: a search's prior and visit counts on the board, and the Elo / win-rate curve of training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zupu.games.boards import BoardGame
from zupu.sampling.mcts import Node
from zupu.train.plots import plt, save


def landing(state: Any, game: BoardGame, action: int) -> tuple[int, int] | None:
    """The drawn cell a move puts its stone on (Connect-4: the column's lowest free row); None for Go's pass."""
    if game.column_actions:
        board = game.board(state)
        free = [r for r in range(game.rows) if board[r][action] == "."]
        return (max(free), action) if free else None
    return game.cell(action)


def search_figure(state: Any, root: Node, game: BoardGame, path: Path, title: str) -> None:
    """Two boards: the prior P(s, a) and the visits N(s, a) of each move, drawn where the move's stone would go;
    the stones marked, the chosen move outlined (Go's pass, if searched, in the panel's title)."""
    board = game.board(state)
    chosen = int(root.actions[int(np.argmax(root.visits))])
    fig, axes = plt.subplots(1, 2, figsize=(3 + game.columns * 0.9, 0.6 + game.rows * 0.55))
    panels = ((axes[0], root.prior, "network prior P(s, a)", "{:.2f}"),
              (axes[1], root.visits, f"visits N(s, a), {int(root.visits.sum())} simulations", "{:.0f}"))
    for ax, values, name, fmt in panels:
        grid = np.full((game.rows, game.columns), np.nan)
        extra = ""
        for action, value in zip(root.actions, values, strict=True):
            where = landing(state, game, int(action))
            if where is None:
                extra = f"; pass {fmt.format(value)}"
            else:
                grid[where] = value
        ax.imshow(grid, cmap="Blues", vmin=0)
        for r in range(game.rows):
            for c in range(game.columns):
                mark = board[r][c]
                if mark != ".":
                    ax.text(c, r, mark, ha="center", va="center", fontsize=14, color="darkred")
                elif not np.isnan(grid[r, c]):
                    ax.text(c, r, fmt.format(grid[r, c]), ha="center", va="center", fontsize=8)
        where = landing(state, game, chosen)
        if where is not None:
            ax.add_patch(plt.Rectangle((where[1] - 0.5, where[0] - 0.5), 1, 1, fill=False, ec="orange", lw=3))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name + extra, fontsize=8)
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def ladder_figure(history: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Elo (each generation against the one before, summed) and the score against MCTSBot with its 95% interval,
    against the generation. Returns whether the run logged a ladder at all."""
    points = [r for r in history if "elo" in r]
    if not points:
        return False
    steps = [r["step"] for r in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([0, *steps], [0.0, *(r["elo"] for r in points)], marker="o")
    left.set_xlabel("generation")
    left.set_ylabel("Elo (generation 0 = 0)")
    left.grid(alpha=0.3)
    left.set_title("Elo from each generation's score against the previous", fontsize=9)
    rate = [r["win_rate_vs_mcts"] for r in points]
    right.fill_between(steps, [r["win_rate_vs_mcts_lo"] for r in points], [r["win_rate_vs_mcts_hi"] for r in points],
                       alpha=0.25, label="95% Wilson interval")
    right.plot(steps, rate, marker="s", label="score vs MCTSBot (same simulations)")
    right.axhline(0.5, color="0.3", ls=":", lw=1)
    right.set_ylim(0, 1)
    right.set_xlabel("generation")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    save(fig, path)
    return True
