"""Figure of the ``transfer`` stage: ``plots/transfer/<name>.png``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from mnistlab.core.figures import new_figure

MAX_COLS = 3  # heatmaps per row of the transfer figure


def transfer_matrix(
    matrices: Mapping[str, Sequence[Sequence[float | None]]], models: Sequence[str], pgd_eps: float
) -> Figure:
    """One heatmap per transfer set (and the stage's PGD): success of examples crafted on
    the row's model when scored on the column's model (the diagonal is the white-box
    success). Panels and cells grow with the number of models; at most three panels a row."""
    n = len(models)
    if not matrices:
        return _empty("no transfer set: no attack form saved one, and no pgd form")
    cols = min(len(matrices), MAX_COLS)
    rows = -(-len(matrices) // cols)
    side = max(3.6, 0.75 * n + 1.6)  # inches per panel: room for n cells and their labels
    fig = new_figure(side * cols + 1.0, side * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    fontsize = max(6.0, min(10.0, 54.0 / n))  # cell text: smaller as cells shrink
    for ax, (name, mat) in zip(axes, matrices.items(), strict=False):
        im = _heatmap(ax, mat, models, fontsize)
        ax.set_title(f"pgd (eps {pgd_eps:g})" if name == "pgd" else name)
    for ax in axes[len(matrices) :]:
        ax.set_axis_off()
    fig.colorbar(im, ax=list(axes[: len(matrices)]), label="attack success (%)", shrink=0.8)
    fig.suptitle("Transfer between models (rows: crafted on; columns: scored on)")
    return fig


def _heatmap(ax, mat: Sequence[Sequence[float | None]], models: Sequence[str], fontsize: float):
    """One success matrix in percent, each cell written in; an empty set's cell is blank."""
    grid = 100 * np.array([[np.nan if v is None else v for v in row] for row in mat], dtype=float)
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid[i, j]
            ax.text(
                j,
                i,
                "–" if np.isnan(v) else f"{v:.1f}%",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if np.isnan(v) or v < 60 else "black",
            )
    rotate = 45 if len(models) > 3 else 0
    ax.set(
        xticks=range(len(models)),
        yticks=range(len(models)),
        xlabel="scored on",
        ylabel="crafted on",
    )
    ax.set_xticklabels(models, rotation=rotate, ha="right" if rotate else "center")
    ax.set_yticklabels(models)
    return im


def _empty(message: str) -> Figure:
    """A small figure that says why there is nothing to draw (the registry expects one)."""
    fig = new_figure(5, 1.2)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _judged_row(axes, images: np.ndarray, knn_class: np.ndarray, label: str) -> None:
    """One row of class images, each captioned with its kNN vote (green: the intended class)."""
    axes[0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    for k, ax in enumerate(axes):
        ax.imshow(np.asarray(images[k]).squeeze(), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        vote = int(knn_class[k])
        ax.set_xlabel(f"kNN {vote}", fontsize=7, color="green" if vote == k else "red")


def class_images_seeded(
    per_model: Mapping[str, Mapping[str, np.ndarray]], judges: Mapping[str, Mapping[str, float]]
) -> Figure:
    """Class images from a fixed seed inside an L2 ball, the same budget for every model:
    the seeds (top row, from the first model's arrays: every model starts from the same),
    then one row per model, labelled with its three judges (kNN accuracy, mean distance
    to the nearest training digit of the class, the other models' reading)."""
    names = list(per_model)
    first = per_model[names[0]]
    n = len(first["seeds"])
    fig = new_figure(1.2 * n + 2.0, 1.4 * (len(names) + 1) + 0.6)
    fig.suptitle(
        "Class images from a fixed seed, same L2 budget (columns: classes; under each: the "
        "class of its nearest training digits)",
        fontsize=10,
    )
    axes = fig.subplots(len(names) + 1, n, squeeze=False)
    s = judges[names[0]]
    _judged_row(
        axes[0],
        first["seeds"],
        first["seed_knn_class"],
        f"seed\nkNN {100 * s['seed_knn_accuracy']:.0f}%\nnearest {s['seed_nearest_l2']:.2f}",
    )
    for k in range(n):
        axes[0, k].set_title(str(k), fontsize=9)
    for r, name in enumerate(names, start=1):
        j = judges[name]
        others = "–" if j["cross_model"] is None else f"{100 * j['cross_model']:.0f}%"
        label = (
            f"{name}\nkNN {100 * j['knn_accuracy']:.0f}%\nnearest {j['nearest_l2']:.2f}"
            f"\nothers {others}"
        )
        a = per_model[name]
        _judged_row(axes[r], a["seeded_images"], a["seeded_knn_class"], label)
    return fig
