"""Figures of the `noise` attack form: ``plots/attack/noise-<model>/<name>.png``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from mnistlab.attacks.common.figures import HIT, MISS, bare, image, to_numpy
from mnistlab.attacks.noise import NoiseResult
from mnistlab.core.figures import new_figure


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
        image(
            fig.add_subplot(gs[0, j]),
            originals[j],
            f"target {targets[j]}",
            ylabel="original" if j == 0 else "",
        )
        ax = fig.add_subplot(gs[1, j])
        im = ax.imshow(to_numpy(result.noise[j]).squeeze(), cmap="RdBu_r", vmin=-scale, vmax=scale)
        bare(ax, "noise" if j == 0 else "")
        ax.set_title(f"L2 {norms[j]:.2f}", fontsize=8)
        noise_axes.append(ax)
        image(
            fig.add_subplot(gs[2, j]),
            result.images[j],
            f"pred {pred[j]} ({100 * conf[j]:.0f}%)",
            HIT if pred[j] == targets[j] else MISS,
            "original + noise" if j == 0 else "",
        )
    fig.colorbar(im, ax=noise_axes, shrink=0.9, pad=0.02, label="noise")
    return fig


def transfer_table(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    predicted: torch.Tensor,
    targets: Sequence[int] | torch.Tensor,
    title: str = "",
    noise_names: Sequence[str] | None = None,
) -> Figure:
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
        image(fig.add_subplot(gs[0, j]), images[j], f"label {int(labels[j])}")
    ax = fig.add_subplot(gs[1, :])
    colors = ["#dddddd", "#f5a623", "#4caf50"]
    ax.imshow(to_numpy(code.T), cmap=ListedColormap(colors), vmin=0, vmax=2, aspect="auto")
    for i in range(k):
        for j in range(m):
            ax.text(j, i, str(int(pred[j, i])), ha="center", va="center", fontsize=9)
    names = noise_names or [f"noise \u2192 {int(t)}" for t in targets]
    ax.set_xticks(range(m), [f"#{j}" for j in range(m)], fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("image")
    ax.tick_params(length=0)
    handles = [
        Patch(color=c, label=lbl)
        for c, lbl in zip(colors, ["true class kept", "other class", "noise's target"], strict=True)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig
