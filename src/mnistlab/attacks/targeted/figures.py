"""Figures of the `targeted` attack form: ``plots/attack/targeted-<model>/<name>.png``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from mnistlab.attacks.common.figures import HIT, MISS, image
from mnistlab.attacks.targeted import TargetedResult
from mnistlab.core.figures import new_figure


def _targeted_row(fig: Figure, gs, row: int, result: TargetedResult, t: int) -> None:
    target = result.targets[t]
    n = result.images.shape[1]
    pred, conf = result.predicted[t].tolist(), result.confidence[t].tolist()
    l2 = result.l2[t].tolist()
    for j in range(n):
        ax = fig.add_subplot(gs[row, j])
        image(
            ax,
            result.images[t, j],
            f"pred {pred[j]} ({100 * conf[j]:.0f}%)\nL2 {l2[j]:.1f}",
            HIT if pred[j] == target else MISS,
            f"target {target}" if j == 0 else "",
        )


def _originals_row(
    fig: Figure, gs, originals: torch.Tensor, labels: Sequence[int] | torch.Tensor | None
) -> None:
    for j in range(len(originals)):
        ax = fig.add_subplot(gs[0, j])
        caption = f"label {int(labels[j])}" if labels is not None else ""
        image(ax, originals[j], caption, ylabel="original" if j == 0 else "")


def targeted_images(
    originals: torch.Tensor,
    result: TargetedResult,
    target_index: int,
    labels: Sequence[int] | torch.Tensor | None = None,
    title: str = "",
) -> Figure:
    """The report's figures 14-16: originals above their examples pushed to one target.

    Captions give the prediction, the softmax confidence of the prediction's class
    when it is the target (green) or of the target otherwise (red), and the L2
    distance to the original.
    """
    n = len(originals)
    target = result.targets[target_index]
    hits = int(result.success[target_index].sum())
    fig = new_figure(1.35 * n + 0.5, 3.9)
    fig.suptitle(
        title or f"Targeted attack towards class {target} ({hits}/{n} classified as {target})"
    )
    gs = fig.add_gridspec(2, n)
    _originals_row(fig, gs, originals, labels)
    _targeted_row(fig, gs, 1, result, target_index)
    return fig


def targeted_grid(
    originals: torch.Tensor,
    result: TargetedResult,
    labels: Sequence[int] | torch.Tensor | None = None,
    title: str = "",
) -> Figure:
    """All targets in one figure: the originals, then one row per target."""
    n, t = len(originals), len(result.targets)
    fig = new_figure(1.35 * n + 0.5, 1.75 * (t + 1) + 0.5)
    fig.suptitle(title or "Targeted attack: each original pushed towards each target")
    gs = fig.add_gridspec(t + 1, n)
    _originals_row(fig, gs, originals, labels)
    for i in range(t):
        _targeted_row(fig, gs, i + 1, result, i)
    return fig
