"""Attribution figures: each function returns a matplotlib Figure named after its PNG.

``attribution_grid.png``, ``deletion_curves.png``, ``sanity_check.png`` and
``occlusion.png``. Functions do not save, show or log; tensors may live anywhere.
Signed maps use one diverging scale centred on zero (red positive, blue negative),
non-negative maps a sequential scale from 0; every attribution panel has its own
range (attributions of different images and methods are not on one scale).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import torch
from matplotlib.figure import Figure

from mnistlab.core.figures import new_figure
from mnistlab.visualize.figures import map_array, outline

SIGNED_CMAP = "RdBu_r"
POSITIVE_CMAP = "magma"
PROB_CMAP = "viridis"
RANDOM_KEY = "random"  # the baseline entry of :func:`deletion_curves`


class CurvesLike(Protocol):
    """What :func:`deletion_curves` reads (``faithfulness.Curves``)."""

    fractions: torch.Tensor  # (S+1,)
    deletion: torch.Tensor  # (B, S+1)
    insertion: torch.Tensor  # (B, S+1)

    @property
    def mean_deletion_auc(self) -> float: ...

    @property
    def mean_insertion_auc(self) -> float: ...


def attribution_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    attributions: Mapping[str, torch.Tensor],
    preds: torch.Tensor | None = None,
    *,
    title: str = "",
) -> Figure:
    """Rows = images, columns = the input then one attribution map per method.

    Args:
        images: pixels in [0, 1], ``(N, 1, 28, 28)``.
        labels: true classes ``(N,)``.
        attributions: method -> ``(N, 1, 28, 28)``; a map with negative values is drawn
            signed (diverging), otherwise from 0 (sequential); each panel its own range.
        preds: predicted classes ``(N,)``, shown beside the true ones.
        title: figure title.

    Returns:
        Figure with ``N * (1 + len(attributions))`` axes.
    """
    n, m = len(images), len(attributions)
    fig = new_figure(1.5 * (m + 1) + 0.3, 1.55 * n + 0.6)
    fig.suptitle(title or "attributions (each panel on its own scale; outline = the digit)")
    axes = fig.subplots(n, m + 1, squeeze=False)
    for k in range(n):
        image = map_array(images[k])
        ax = axes[k, 0]
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        text = f"true {int(labels[k])}"
        if preds is not None:
            text += f", pred {int(preds[k])}"
        ax.set_ylabel(text, fontsize=8)
        if k == 0:
            ax.set_title("input", fontsize=9)
        for c, (name, attr) in enumerate(attributions.items(), start=1):
            a = map_array(attr[k])
            ax = axes[k, c]
            if a.min() < 0:
                lim = max(float(np.abs(a).max()), 1e-12)
                ax.imshow(a, cmap=SIGNED_CMAP, vmin=-lim, vmax=lim)
                outline(ax, image, "k")
            else:
                ax.imshow(a, cmap=POSITIVE_CMAP, vmin=0, vmax=max(float(a.max()), 1e-12))
                outline(ax, image, "w")
            if k == 0:
                ax.set_title(name.replace("_", " "), fontsize=9)
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    return fig


def deletion_curves(curves: Mapping[str, CurvesLike], *, title: str = "") -> Figure:
    """Mean deletion (left) and insertion (right) curves, one line per method.

    Args:
        curves: method -> ``faithfulness.Curves``; the key ``"random"`` (random pixel
            order, the baseline) is drawn dashed grey.
        title: figure title.

    Returns:
        Figure with 2 axes; legends give each method's mean AUC.
    """
    fig = new_figure(9.0, 3.8)
    fig.suptitle(
        title or "faithfulness: P(true class) as pixels are deleted / inserted in attribution order"
    )
    ax_del, ax_ins = fig.subplots(1, 2)
    for name, cur in curves.items():
        style = {"color": "0.45", "ls": "--"} if name == RANDOM_KEY else {}
        f = cur.fractions.double().cpu().numpy()
        ax_del.plot(
            f,
            cur.deletion.double().mean(0).cpu().numpy(),
            **style,
            label=f"{name} (AUC {cur.mean_deletion_auc:.3f})",
        )
        ax_ins.plot(
            f,
            cur.insertion.double().mean(0).cpu().numpy(),
            **style,
            label=f"{name} (AUC {cur.mean_insertion_auc:.3f})",
        )
    ax_del.set(
        title="deletion (lower AUC = more faithful)",
        xlabel="fraction of pixels deleted (most important first)",
    )
    ax_ins.set(
        title="insertion (higher AUC = more faithful)",
        xlabel="fraction of pixels inserted (most important first)",
    )
    for ax in (ax_del, ax_ins):
        ax.set(ylabel="mean P(true class)", xlim=(0, 1), ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def sanity_check(
    table: Mapping[str, Mapping[str, float]], *, threshold: float = 0.5, title: str = ""
) -> Figure:
    """Spearman rho of each method's |attribution| with the trained model's, per
    cascading randomisation step (Adebayo et al. 2018).

    Args:
        table: ``{step: {method: mean rho}}`` from ``sanity.cascading_randomization``
            (first step ``"original"``, then layers top to bottom, cumulative).
        threshold: pass line (a method passes below it after the last step).
        title: figure title.

    Returns:
        Figure with 1 axes.
    """
    steps = list(table)
    methods = list(dict.fromkeys(name for row in table.values() for name in row))
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    xs = np.arange(len(steps))
    for name in methods:
        ax.plot(xs, [table[s].get(name, np.nan) for s in steps], "o-", label=name.replace("_", " "))
    ax.axhline(threshold, color="0.4", ls="--", lw=1, label=f"pass below {threshold:g}")
    ax.axhline(0, color="0.7", lw=0.8)
    labels = [
        "none" if s == "original" else (s if i <= 1 else f"+{s}") for i, s in enumerate(steps)
    ]
    ax.set_xticks(xs, labels)
    values = [v for row in table.values() for v in row.values() if np.isfinite(v)]
    low = min([-0.25, *(v - 0.05 for v in values)])
    ax.set(
        xlabel="layers randomised (cumulative, from the output down)",
        ylabel="Spearman rho of |attribution|\nwith the trained model's",
        ylim=(low, 1.05),
        title=title or "sanity check: cascading model randomisation",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
