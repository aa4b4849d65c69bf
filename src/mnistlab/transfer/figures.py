"""Figure of the ``transfer`` stage: ``plots/transfer/<name>.png``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from mnistlab.core.figures import new_figure


def transfer_matrix(
    matrices: dict[str, list[list[float]]], models: Sequence[str], pgd_eps: float
) -> Figure:
    """One heatmap per attack form: success of examples crafted on the row's model
    when scored on the column's model (the diagonal is the white-box success)."""
    fig = new_figure(3.6 * len(matrices), 3.6)
    axes = fig.subplots(1, len(matrices))
    for ax, (form, mat) in zip(np.atleast_1d(axes), matrices.items(), strict=True):
        grid = 100 * np.asarray(mat, dtype=float)
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.1f}%",
                    ha="center",
                    va="center",
                    color="white" if grid[i, j] < 60 else "black",
                )
        label = f"pgd (eps {pgd_eps:g})" if form == "pgd" else form
        ax.set(
            xticks=range(len(models)),
            yticks=range(len(models)),
            xticklabels=models,
            yticklabels=models,
            xlabel="scored on",
            ylabel="crafted on",
            title=label,
        )
    fig.colorbar(im, ax=axes, label="attack success (%)", shrink=0.8)
    fig.suptitle("Transfer between models (class_model: images read as their intended class)")
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
        label = (
            f"{name}\nkNN {100 * j['knn_accuracy']:.0f}%\nnearest {j['nearest_l2']:.2f}"
            f"\nothers {100 * j['cross_model']:.0f}%"
        )
        a = per_model[name]
        _judged_row(axes[r], a["seeded_images"], a["seeded_knn_class"], label)
    return fig
