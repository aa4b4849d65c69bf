"""Figure of the ``transfer`` stage: ``plots/transfer/<name>.png``."""

from __future__ import annotations

from collections.abc import Sequence

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
