"""PNG figures: training curves and image grids (weights, samples, filters)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from zupu.atomic import atomic_open  # noqa: E402


def save(fig: Any, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _is_rate(name: str) -> bool:
    return any(w in name for w in ("acc", "rate", "error", "bleu", "chrf", "frac"))


def plot_history(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss-like series on the left axis, accuracy-like series on the right, against step."""
    names = sorted({k for r in history for k, v in r.items() if k != "step" and isinstance(v, (int, float))})
    names = [n for n in names if n != "lr"]
    losses, rates = [n for n in names if not _is_rate(n)], [n for n in names if _is_rate(n)]
    fig, ax = plt.subplots(figsize=(7, 4))
    for n in losses:
        pts = [(r["step"], r[n]) for r in history if isinstance(r.get(n), (int, float))]
        ax.plot(*zip(*pts, strict=True), label=n, marker="o" if len(pts) < 30 else None, ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss / mistakes")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if rates:
        ax2 = ax.twinx()
        for i, n in enumerate(rates):
            pts = [(r["step"], r[n]) for r in history if isinstance(r.get(n), (int, float))]
            ax2.plot(*zip(*pts, strict=True), label=n, ls="--", color=f"C{len(losses) + i}", marker="s", ms=3)
        ax2.set_ylabel("accuracy / rate")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if not losses:
        ax.set_yticks([])
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title(title)
    save(fig, path)


def image_grid(images: Sequence[np.ndarray], path: Path, titles: Sequence[str] | None = None,
               suptitle: str = "", cols: int = 10, cmap: str = "RdBu_r", symmetric: bool = True) -> None:
    """A grid of 2-D arrays (weights as images: red positive, blue negative by default)."""
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.35), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            img = np.asarray(images[i], dtype=np.float32)
            lim = float(np.abs(img).max()) or 1.0
            kw = {"vmin": -lim, "vmax": lim} if symmetric else {}
            ax.imshow(img, cmap=cmap, **kw)
            if titles:
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10, y=1.02)
    save(fig, path)
