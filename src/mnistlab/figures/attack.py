"""Attack figures (the report's figures 12-20): class models, targeted examples, learned
noise and how it transfers, and robust accuracy against eps.

Images are drawn as real pixels (grey, 0 = black, 1 = white); noise on a diverging
scale centred on 0, shared by every panel of a figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mnistlab.attacks import ClassModelResult, NoiseResult, TargetedResult
from mnistlab.figures import new_figure

HIT, MISS = "tab:green", "tab:red"


def _np(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.detach().float().cpu())


def _image(ax: Axes, img: torch.Tensor, caption: str = "", color: str = "black",
           ylabel: str = "") -> None:
    """One grey-scale ``(1, 28, 28)`` image in [0, 1], caption above, optional row label."""
    ax.imshow(_np(img).squeeze(), cmap="gray", vmin=0, vmax=1)
    _bare(ax, ylabel)
    if caption:
        ax.set_title(caption, fontsize=8, color=color)


def _bare(ax: Axes, ylabel: str = "") -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)


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
        _image(ax, result.images[k], f"class {k}\npred {pred[k]} ({100 * conf[k]:.1f}%)",
               HIT if pred[k] == k else MISS)
    return fig


def class_cost(result: ClassModelResult, title: str = "") -> Figure:
    """The report's figure 13: the target logit of each class against iterations."""
    import matplotlib

    cost = _np(result.cost)  # (steps + 1, C)
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab10"]
    for k in range(cost.shape[1]):
        ax.plot(np.arange(len(cost)), cost[:, k], color=colors(k % 10), lw=1.4, label=f"class {k}")
    ax.set(xlabel="iteration", ylabel="target logit (pre-softmax)",
           title=title or "Class model visualisation: target logit during gradient ascent")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return fig


def _targeted_row(fig: Figure, gs, row: int, result: TargetedResult, t: int) -> None:
    target = result.targets[t]
    n = result.images.shape[1]
    pred, conf = result.predicted[t].tolist(), result.confidence[t].tolist()
    l2 = result.l2[t].tolist()
    for j in range(n):
        ax = fig.add_subplot(gs[row, j])
        _image(ax, result.images[t, j],
               f"pred {pred[j]} ({100 * conf[j]:.0f}%)\nL2 {l2[j]:.1f}",
               HIT if pred[j] == target else MISS, f"target {target}" if j == 0 else "")


def _originals_row(fig: Figure, gs, originals: torch.Tensor,
                   labels: Sequence[int] | torch.Tensor | None) -> None:
    for j in range(len(originals)):
        ax = fig.add_subplot(gs[0, j])
        caption = f"label {int(labels[j])}" if labels is not None else ""
        _image(ax, originals[j], caption, ylabel="original" if j == 0 else "")


def targeted_images(originals: torch.Tensor, result: TargetedResult, target_index: int,
                    labels: Sequence[int] | torch.Tensor | None = None,
                    title: str = "") -> Figure:
    """The report's figures 14-16: originals above their examples pushed to one target.

    Captions give the prediction, the softmax confidence of the prediction's class
    when it is the target (green) or of the target otherwise (red), and the L2
    distance to the original.
    """
    n = len(originals)
    target = result.targets[target_index]
    hits = int(result.success[target_index].sum())
    fig = new_figure(1.35 * n + 0.5, 3.9)
    fig.suptitle(title or f"Targeted attack towards class {target} "
                 f"({hits}/{n} classified as {target})")
    gs = fig.add_gridspec(2, n)
    _originals_row(fig, gs, originals, labels)
    _targeted_row(fig, gs, 1, result, target_index)
    return fig


def targeted_grid(originals: torch.Tensor, result: TargetedResult,
                  labels: Sequence[int] | torch.Tensor | None = None,
                  title: str = "") -> Figure:
    """All targets in one figure: the originals, then one row per target."""
    n, t = len(originals), len(result.targets)
    fig = new_figure(1.35 * n + 0.5, 1.75 * (t + 1) + 0.5)
    fig.suptitle(title or "Targeted attack: each original pushed towards each target")
    gs = fig.add_gridspec(t + 1, n)
    _originals_row(fig, gs, originals, labels)
    for i in range(t):
        _targeted_row(fig, gs, i + 1, result, i)
    return fig


def noise_images(originals: torch.Tensor, result: NoiseResult, title: str) -> Figure:
    """The report's figures 17-19: originals, their learned noise, and original + noise.

    The noise row shares one diverging scale centred on 0 (red adds ink, blue removes it).
    """
    p = len(originals)
    fig = new_figure(1.35 * p + 1.3, 5.7)
    fig.suptitle(title)
    gs = fig.add_gridspec(3, p)
    scale = float(result.noise.abs().max()) or 1.0
    targets, pred = result.targets.tolist(), result.predicted.tolist()
    conf, norms = result.confidence.tolist(), result.noise_l2.tolist()
    noise_axes, im = [], None
    for j in range(p):
        _image(fig.add_subplot(gs[0, j]), originals[j], f"target {targets[j]}",
               ylabel="original" if j == 0 else "")
        ax = fig.add_subplot(gs[1, j])
        im = ax.imshow(_np(result.noise[j]).squeeze(), cmap="RdBu_r", vmin=-scale, vmax=scale)
        _bare(ax, "noise" if j == 0 else "")
        ax.set_title(f"L2 {norms[j]:.2f}", fontsize=8)
        noise_axes.append(ax)
        _image(fig.add_subplot(gs[2, j]), result.images[j],
               f"pred {pred[j]} ({100 * conf[j]:.0f}%)",
               HIT if pred[j] == targets[j] else MISS, "original + noise" if j == 0 else "")
    fig.colorbar(im, ax=noise_axes, shrink=0.9, pad=0.02, label="noise")
    return fig


def transfer_table(images: torch.Tensor, labels: Sequence[int] | torch.Tensor,
                   predicted: torch.Tensor, targets: Sequence[int] | torch.Tensor,
                   title: str = "", noise_names: Sequence[str] | None = None) -> Figure:
    """The report's figure 20: every learned noise applied to every image.

    Columns are the images (shown on top with their true label), rows the noises;
    each cell holds the predicted class, green where the noise carried the image to
    its own target, orange where it changed the class to another one, grey where the
    prediction stayed the true label (also where the noise's target is the true label).
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    pred = torch.as_tensor(predicted).cpu()  # (M, K)
    labels = torch.as_tensor(labels).cpu()
    targets = torch.as_tensor(targets).cpu()
    m, k = pred.shape
    code = torch.ones_like(pred)  # 1: another wrong class
    code[pred == targets[None, :]] = 2  # 2: the noise's target
    code[pred == labels[:, None]] = 0  # 0: unchanged (also where the target is the label)
    fig = new_figure(0.75 * m + 2.2, 0.5 * k + 2.6)
    fig.suptitle(title or "Transfer of learned noise: predicted class of image + noise")
    gs = fig.add_gridspec(2, m, height_ratios=[1.1, 0.5 * k])
    for j in range(m):
        _image(fig.add_subplot(gs[0, j]), images[j], f"label {int(labels[j])}")
    ax = fig.add_subplot(gs[1, :])
    colors = ["#dddddd", "#f5a623", "#4caf50"]
    ax.imshow(_np(code.T), cmap=ListedColormap(colors), vmin=0, vmax=2, aspect="auto")
    for i in range(k):
        for j in range(m):
            ax.text(j, i, str(int(pred[j, i])), ha="center", va="center", fontsize=9)
    names = noise_names or [f"noise \u2192 {int(t)}" for t in targets]
    ax.set_xticks(range(m), [f"#{j}" for j in range(m)], fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("image")
    ax.tick_params(length=0)
    handles = [Patch(color=c, label=lbl) for c, lbl in zip(
        colors, ["true class kept", "other class", "noise's target"], strict=True)]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


def robustness(curves: dict[str, list[dict]], title: str) -> Figure:
    """Robust accuracy against the L-inf budget eps, one line per model/attack."""
    fig = new_figure(6.5, 4.2)
    ax = fig.add_subplot()
    for name, rows in curves.items():
        eps = [r["eps"] for r in rows]
        acc = [100 * r["robust_accuracy"] for r in rows]
        ax.plot(eps, acc, "o-", lw=1.5, label=name)
    ax.set(xlabel="eps (L-inf budget, pixels in [0, 1])", ylabel="robust accuracy (%)",
           ylim=(-2, 102), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def transfer_matrix(matrices: dict[str, list[list[float]]], models: Sequence[str],
                    pgd_eps: float) -> Figure:
    """One 2x2 heatmap per attack form: success of examples crafted on the row's model
    when scored on the column's model (the diagonal is the white-box success)."""
    fig = new_figure(3.6 * len(matrices), 3.6)
    axes = fig.subplots(1, len(matrices))
    for ax, (form, mat) in zip(np.atleast_1d(axes), matrices.items(), strict=True):
        grid = 100 * np.asarray(mat, dtype=float)
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, f"{grid[i, j]:.1f}%", ha="center", va="center",
                        color="white" if grid[i, j] < 60 else "black")
        label = f"pgd (eps {pgd_eps:g})" if form == "pgd" else form
        ax.set(xticks=range(len(models)), yticks=range(len(models)), xticklabels=models,
               yticklabels=models, xlabel="scored on", ylabel="crafted on", title=label)
    fig.colorbar(im, ax=axes, label="attack success (%)", shrink=0.8)
    fig.suptitle("Transfer of adversarial examples between the two models")
    return fig
