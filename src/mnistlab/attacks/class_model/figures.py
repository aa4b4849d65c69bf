"""Figures of the `class_model` attack form: ``plots/attack/class_model-<model>/<name>.png``."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from mnistlab.attacks.class_model import ClassModelResult
from mnistlab.attacks.common.figures import HIT, MISS, image, to_numpy
from mnistlab.core.figures import new_figure


def class_images(result: ClassModelResult, title: str = "") -> Figure:
    """The report's figure 12: the image grown for each class, with its prediction."""
    n = len(result.images)
    cols = min(n, 5)
    rows = -(-n // cols)
    fig = new_figure(1.7 * cols, 1.95 * rows + 0.45)
    fig.suptitle(title or "Class model visualisation: images maximising each class's logit")
    pred, conf = result.predicted.tolist(), result.confidence.tolist()
    for k in range(n):
        ax = fig.add_subplot(rows, cols, k + 1)
        image(
            ax,
            result.images[k],
            f"class {k}\npred {pred[k]} ({100 * conf[k]:.1f}%)",
            HIT if pred[k] == k else MISS,
        )
    return fig


def class_cost(result: ClassModelResult, title: str = "") -> Figure:
    """The report's figure 13: the target logit of each class against iterations."""
    import matplotlib

    cost = to_numpy(result.cost)  # (steps + 1, C)
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab10"]
    for k in range(cost.shape[1]):
        ax.plot(np.arange(len(cost)), cost[:, k], color=colors(k % 10), lw=1.4, label=f"class {k}")
    ax.set(
        xlabel="iteration",
        ylabel="target logit (pre-softmax)",
        title=title or "Class model visualisation: target logit during gradient ascent",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return fig
