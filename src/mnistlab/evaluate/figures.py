"""Test-set figures: confusion matrix, random predictions (report fig. 4), worst mistakes."""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

from mnistlab.core.figures import new_figure


def confusion(cm: torch.Tensor, model: str, accuracy: float) -> Figure:
    """Confusion matrix with counts; the colour scale is logarithmic so errors show."""
    from matplotlib.colors import LogNorm

    k = cm.shape[0]
    fig = new_figure(6.5, 5.5)
    ax = fig.add_subplot()
    im = ax.imshow(cm.numpy() + 1, cmap="Blues", norm=LogNorm())
    for i in range(k):
        for j in range(k):
            v = int(cm[i, j])
            if v:
                ax.text(
                    j,
                    i,
                    str(v),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if i == j else "black",
                )
    ax.set(
        xticks=range(k),
        yticks=range(k),
        xlabel="predicted class",
        ylabel="true class",
        title=f"{model}: test confusion matrix (accuracy {100 * accuracy:.2f}%)",
    )
    fig.colorbar(im, ax=ax, label="count + 1 (log scale)")
    return fig


def image_grid(
    images: torch.Tensor,
    captions: list[str],
    title: str,
    cols: int = 6,
    colors: list[str] | None = None,
) -> Figure:
    """Grey-scale images (uint8 or [0, 1] pixels) in a grid, one caption under each."""
    n = len(images)
    cols = min(cols, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig = new_figure(1.6 * cols, 1.9 * rows + 0.4)
    fig.suptitle(title)
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i < n:
            img = images[i].float()
            img = img / 255.0 if images.dtype == torch.uint8 else img
            ax.imshow(np.asarray(img.squeeze()), cmap="gray", vmin=0, vmax=1)
            ax.set_title(captions[i], fontsize=8, color=(colors or ["black"] * n)[i])
    return fig


def samples(images: torch.Tensor, picked: list[dict], model: str) -> Figure:
    """The report's figure 4: random test images with true and predicted labels."""
    caps = [
        f"true {d['true']}, pred {d['predicted']}\n({100 * d['confidence']:.1f}%)" for d in picked
    ]
    colors = ["black" if d["true"] == d["predicted"] else "red" for d in picked]
    return image_grid(images, caps, f"{model}: random test images", colors=colors)


def misclassified(images: torch.Tensor, picked: list[dict], model: str) -> Figure:
    """The most confidently misclassified test images."""
    caps = [
        f"#{d['index']}: true {d['true']}\npred {d['predicted']} ({100 * d['confidence']:.1f}%)"
        for d in picked
    ]
    return image_grid(images, caps, f"{model}: most confident mistakes", cols=8)
