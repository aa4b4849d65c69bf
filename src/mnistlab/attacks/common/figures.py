"""Attack figures (the report's figures 12-20): class models, targeted examples, learned
noise and how it transfers, and robust accuracy against eps.

Images are drawn as real pixels (grey, 0 = black, 1 = white); noise on a diverging
scale centred on 0, shared by every panel of a figure.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mnistlab.core.figures import new_figure

HIT, MISS = "tab:green", "tab:red"


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.detach().float().cpu())


def image(
    ax: Axes, img: torch.Tensor, caption: str = "", color: str = "black", ylabel: str = ""
) -> None:
    """One grey-scale ``(1, 28, 28)`` image in [0, 1], caption above, optional row label."""
    ax.imshow(to_numpy(img).squeeze(), cmap="gray", vmin=0, vmax=1)
    bare(ax, ylabel)
    if caption:
        ax.set_title(caption, fontsize=8, color=color)


def bare(ax: Axes, ylabel: str = "") -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)


def robustness(curves: dict[str, list[dict]], title: str) -> Figure:
    """Robust accuracy against the L-inf budget eps, one line per model/attack."""
    fig = new_figure(6.5, 4.2)
    ax = fig.add_subplot()
    for name, rows in curves.items():
        eps = [r["eps"] for r in rows]
        acc = [100 * r["robust_accuracy"] for r in rows]
        ax.plot(eps, acc, "o-", lw=1.5, label=name)
    ax.set(
        xlabel="eps (L-inf budget, pixels in [0, 1])",
        ylabel="robust accuracy (%)",
        ylim=(-2, 102),
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
