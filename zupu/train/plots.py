"""PNG figures: training curves and image grids (weights, samples, filters).

Text in figures falls back to an installed font with Chinese glyphs (`cjk_font`), so a Chinese token is
drawn, not a box: matplotlib's own fonts have none.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import font_manager  # noqa: E402

from zupu.atomic import atomic_open  # noqa: E402
from zupu.train.metrics import display_name  # noqa: E402

# Families with CJK glyphs, the most complete first: Debian's fonts-noto-cjk and fonts-wqy-*, then macOS's
# and Windows' own.
CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Micro Hei",
                "WenQuanYi Zen Hei", "Droid Sans Fallback", "AR PL UMing CN", "PingFang SC", "Hiragino Sans GB",
                "Heiti SC", "Microsoft YaHei", "SimHei", "Arial Unicode MS")


@functools.cache
def cjk_font() -> str | None:
    """The family of an installed font with Chinese glyphs, or None (Debian: apt-get install fonts-noto-cjk)."""
    names = {f.name for f in font_manager.fontManager.ttflist}
    if not names.intersection(CJK_FAMILIES):  # installed after matplotlib cached its font list: look again
        for path in font_manager.findSystemFonts():
            if any(k in path.lower() for k in ("cjk", "wqy", "droid", "uming", "yahei", "simhei", "pingfang",
                                                "hiragino", "stheit", "unicode")):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # a file FreeType cannot read is no candidate
                    continue
        names = {f.name for f in font_manager.fontManager.ttflist}
    return next((n for n in CJK_FAMILIES if n in names), None)


if cjk_font():  # a family list: matplotlib takes each glyph from the first font that has it
    plt.rcParams["font.family"] = ["sans-serif", cjk_font()]


def save(fig: Any, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _is_rate(name: str) -> bool:
    return any(w in name for w in ("acc", "rate", "error", "bleu", "chrf", "frac"))


def _series(history: list[dict[str, Any]], name: str) -> list[tuple[float, float]]:
    return [(r["step"], r[name]) for r in history if isinstance(r.get(name), (int, float))]


def plot_history(history: list[dict[str, Any]], path: Path, title: str,
                 target: tuple[str, float] | None = None) -> bool:
    """Loss-like series on the left axis, accuracy-like ones on the right, against the training step, with the
    milestone's `(metric, target)` as a dotted line where that metric is drawn. Series of fewer than two
    points say nothing as a curve and are left out; returns whether there was anything to draw."""
    names = sorted({k for r in history for k in r if k not in ("step", "lr")})
    names = [n for n in names if len(_series(history, n)) >= 2]
    if not names:
        return False
    losses, rates = [n for n in names if not _is_rate(n)], [n for n in names if _is_rate(n)]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    axes = {}
    for n in losses:
        ax.plot(*zip(*_series(history, n), strict=True), label=display_name(n), ms=3,
                marker="o" if len(_series(history, n)) < 30 else None)
        axes[n] = ax
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
    if losses:
        ax.set_ylabel(display_name(losses[0]) if len(losses) == 1 else "loss")
    if rates:
        ax2 = ax.twinx() if losses else ax
        for i, n in enumerate(rates):
            ax2.plot(*zip(*_series(history, n), strict=True), label=display_name(n), ls="--",
                     color=f"C{len(losses) + i}", marker="s", ms=3)
            axes[n] = ax2
        ax2.set_ylabel(display_name(rates[0]) if len(rates) == 1 else "accuracy / rate")
    if target and target[0] in axes:
        axes[target[0]].axhline(target[1], color="0.3", ls=":", lw=1.2, label=f"target ({display_name(target[0])})")
    handles, labels = [], []
    for a in dict.fromkeys(axes.values()):
        h, la = a.get_legend_handles_labels()
        handles, labels = handles + h, labels + la
    # beside the plot, not over the data
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.12 if rates and losses else 1.02, 1), fontsize=8)
    ax.set_title(title)
    save(fig, path)
    return True


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
