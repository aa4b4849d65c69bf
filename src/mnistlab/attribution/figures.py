"""Attribution figures: each function returns a matplotlib Figure named after its PNG.

``attribution_grid.png``, ``deletion_curves.png``, ``sanity_check.png`` and
``occlusion.png``. Functions do not save, show or log; tensors may live anywhere.
Signed maps use one diverging scale centred on zero (red positive, blue negative),
non-negative maps a sequential scale from 0; every attribution panel has its own
range (attributions of different images and methods are not on one scale). Each method
keeps one colour and one short label (:data:`LABELS`) in every figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import torch
from matplotlib.figure import Figure

from mnistlab.attribution.faithfulness import RANDOM_KEY
from mnistlab.core.figures import new_figure
from mnistlab.visualize.figures import map_array, outline

SIGNED_CMAP = "RdBu_r"
POSITIVE_CMAP = "magma"
PROB_CMAP = "viridis"
# The methods in the stage's order, with short labels: nine columns of the grid must fit.
LABELS = {
    "saliency": "saliency",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "IG black",
    "ig_blur": "IG blur",
    "ig_noise": "IG noise",
    "ig_mean": "IG mean",
    "grad_cam": "Grad-CAM",
    "occlusion": "occlusion",
    RANDOM_KEY: "random order",
}


def label(name: str) -> str:
    """Short display name of a method (its key, spaced, if it has none)."""
    return LABELS.get(name, name.replace("_", " "))


def style(name: str) -> dict[str, object]:
    """Line style of a method: a fixed tab10 colour per known method (so a method looks
    the same in every figure), dashed grey for the random order."""
    if name == RANDOM_KEY:
        return {"color": "0.45", "ls": "--"}
    known = [m for m in LABELS if m != RANDOM_KEY]
    if name in known:
        return {"color": f"C{known.index(name)}"}
    return {}


def _verdict(name: str, passes: Mapping[str, bool] | None) -> str:
    if passes is None or name not in passes:
        return ""
    return "" if passes[name] else ", fails sanity"


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
    passes: Mapping[str, bool] | None = None,
    trusted: str | None = None,
) -> Figure:
    """Rows = images, columns = the input then one attribution map per method.

    Args:
        images: pixels in [0, 1], ``(N, 1, 28, 28)``.
        labels: true classes ``(N,)``.
        attributions: method -> ``(N, 1, 28, 28)``; a map with negative values is drawn
            signed (diverging), otherwise from 0 (sequential); each panel its own range.
        preds: predicted classes ``(N,)``, shown beside the true ones.
        title: figure title.
        passes: method -> passes the sanity check; shown under each column's name.
        trusted: the trusted method, whose column name is set in bold.

    Returns:
        Figure with ``N * (1 + len(attributions))`` axes.
    """
    n, m = len(images), len(attributions)
    panel = 1.3  # inches per 28x28 map: nine columns stay under 13 inches
    fig = new_figure(panel * (m + 1) + 0.3, (panel + 0.05) * n + 0.9)
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
                head = label(name)
                if passes is not None and name in passes:
                    head += "\nsanity " + ("passes" if passes[name] else "fails")
                if name == trusted:
                    head += " (trusted)"
                ax.set_title(head, fontsize=8, fontweight="bold" if name == trusted else "normal")
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    return fig


def deletion_curves(
    curves: Mapping[str, Mapping[str, CurvesLike]],
    *,
    passes: Mapping[str, bool] | None = None,
    title: str = "",
) -> Figure:
    """Mean deletion (left) and insertion (right) curves, one row per fill, one line per
    method; each legend lists the methods by their AUC, best first (the ranking).

    Args:
        curves: fill (e.g. ``"black"``, ``"blur"``) -> method -> ``faithfulness.Curves``;
            the method ``"random"`` (random pixel order, the baseline) is drawn dashed grey.
        passes: method -> passes the sanity check; failures are marked in the legends.
        title: figure title.

    Returns:
        Figure with ``2 * len(curves)`` axes.
    """
    fills = list(curves)
    fig = new_figure(11.0, 4.2 * len(fills) + 0.4)
    fig.suptitle(
        title or "faithfulness: P(true class) as pixels are deleted / inserted in attribution order"
    )
    axes = fig.subplots(len(fills), 2, squeeze=False)
    for (ax_del, ax_ins), fill in zip(axes, fills, strict=True):
        by_method = curves[fill]
        for ax, kind in ((ax_del, "deletion"), (ax_ins, "insertion")):
            auc = {name: getattr(cur, f"mean_{kind}_auc") for name, cur in by_method.items()}
            best_first = sorted(auc, key=auc.__getitem__, reverse=kind == "insertion")
            for name in best_first:
                cur = by_method[name]
                ax.plot(
                    cur.fractions.double().cpu().numpy(),
                    getattr(cur, kind).double().mean(0).cpu().numpy(),
                    **style(name),
                    label=f"{label(name)} ({auc[name]:.3f}{_verdict(name, passes)})",
                )
            better = "lower" if kind == "deletion" else "higher"
            ax.set(
                title=f"{kind}, {fill} fill ({better} AUC = more faithful)",
                xlabel=f"fraction of pixels {'deleted' if kind == 'deletion' else 'inserted'}"
                " (most important first)",
                ylabel="mean P(true class)",
                xlim=(0, 1),
                ylim=(-0.02, 1.02),
            )
            ax.grid(alpha=0.3)
            # deletion curves end low, insertion curves high: the legend goes where they are not
            where = "upper right" if kind == "deletion" else "lower right"
            ax.legend(fontsize=6.5, title="AUC, best first", title_fontsize=7, loc=where)
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
    fig = new_figure(8.0, 4.2)
    ax = fig.add_subplot()
    xs = np.arange(len(steps))
    for name in methods:
        ys = [table[s].get(name, np.nan) for s in steps]
        ax.plot(xs, ys, "o-", ms=4, **style(name), label=label(name))
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
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # eight methods
    return fig
