"""Inside the CNNs: conv filters (report figs. 7-8), feature maps, occlusion (fig. 11).

Weights use one diverging scale centred on zero per figure (red positive, blue
negative); feature maps one sequential scale per layer; occlusion maps grey
probabilities on a fixed [0, 1] scale, so every panel reads the same way.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure

from mnistlab.figures import new_figure
from mnistlab.inspect import OcclusionResult

WEIGHT_CMAP = "RdBu_r"
ACT_CMAP = "magma"
PROB_CMAP = "gray"
SEPARATOR = "#3a3a3a"  # between tiles of a mosaic


def _weights(filters: dict[str, torch.Tensor] | torch.Tensor, layer: str) -> torch.Tensor:
    """Accept the dict from :func:`mnistlab.inspect.conv_filters` or one weight tensor."""
    w = filters[layer] if isinstance(filters, dict) else filters
    return w.detach().float().cpu()


def _symmetric_limit(w: torch.Tensor) -> float:
    """Half-width of a colour scale centred on zero that holds every value."""
    return max(float(w.abs().max()), 1e-12)


def _title(model: str, text: str) -> str:
    return f"{model}: {text}" if model else text


def _kernel_grid(kernels: torch.Tensor, title: str, cols: int = 8) -> Figure:
    """Small 2-D kernels ``(K, h, w)`` one per axes, one shared zero-centred scale."""
    k = len(kernels)
    cols = min(cols, k)
    rows = math.ceil(k / cols)
    m = _symmetric_limit(kernels)
    fig = new_figure(1.05 * cols + 1.2, 1.15 * rows + 0.6)
    fig.suptitle(title)
    axes = fig.subplots(rows, cols, squeeze=False)
    im = None
    for i, ax in enumerate(axes.flat):
        ax.set(xticks=[], yticks=[])
        if i >= k:
            ax.remove()
            continue
        im = ax.imshow(kernels[i].numpy(), cmap=WEIGHT_CMAP, vmin=-m, vmax=m)
        ax.set_title(f"#{i}", fontsize=8, pad=2)
    fig.colorbar(im, ax=axes, shrink=0.8, label="weight")
    return fig


def conv1_filters(filters: dict[str, torch.Tensor] | torch.Tensor, model: str = "") -> Figure:
    """All 32 first-layer 3x3 kernels (report fig. 7), one colour scale centred on zero."""
    w = _weights(filters, "conv1")  # (32, 1, 3, 3)
    return _kernel_grid(w[:, 0], _title(model, "conv1 filters (3x3, one per output channel)"))


def conv2_filters_channel0(filters: dict[str, torch.Tensor] | torch.Tensor,
                           model: str = "") -> Figure:
    """The 32 second-layer kernels applied to input channel 0 (report fig. 8)."""
    w = _weights(filters, "conv2")  # (32, 32, 3, 3)
    return _kernel_grid(w[:, 0], _title(model, "conv2 filters on input channel 0"))


def _mosaic(tiles: np.ndarray, gap: int = 1) -> np.ndarray:
    """Tile ``(R, C, h, w)`` into one ``(R*(h+gap)-gap, C*(w+gap)-gap)`` image; gaps are NaN."""
    r, c, h, w = tiles.shape
    out = np.full((r * (h + gap) - gap, c * (w + gap) - gap), np.nan, dtype=np.float64)
    for i in range(r):
        for j in range(c):
            out[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = tiles[i, j]
    return out


def conv2_filters_all(filters: dict[str, torch.Tensor] | torch.Tensor, model: str = "") -> Figure:
    """Every conv2 kernel as one mosaic: rows = output channel, columns = input channel."""
    import matplotlib as mpl

    w = _weights(filters, "conv2")  # (32, 32, 3, 3)
    c_out, c_in, kh, kw = w.shape
    m = _symmetric_limit(w)
    cmap = mpl.colormaps[WEIGHT_CMAP].with_extremes(bad=SEPARATOR)
    fig = new_figure(9, 8.2)
    ax = fig.add_subplot()
    im = ax.imshow(_mosaic(w.numpy()), cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
    step = 4 if max(c_out, c_in) > 16 else 1
    ax.set_xticks([j * (kw + 1) + (kw - 1) / 2 for j in range(0, c_in, step)],
                  [str(j) for j in range(0, c_in, step)])
    ax.set_yticks([i * (kh + 1) + (kh - 1) / 2 for i in range(0, c_out, step)],
                  [str(i) for i in range(0, c_out, step)])
    ax.tick_params(length=0, labelsize=8)
    ax.set(xlabel="input channel", ylabel="output channel",
           title=_title(model, f"all conv2 filters ({c_out}x{c_in} kernels of {kh}x{kw})"))
    fig.colorbar(im, ax=ax, shrink=0.8, label="weight")
    return fig


def activations(image: torch.Tensor, acts: dict[str, torch.Tensor], model: str = "",
                caption: str = "") -> Figure:
    """The input beside conv1's and conv2's post-ReLU feature maps (one scale per layer).

    Args:
        image: the input, 784 pixels in [0, 1] (any shape, e.g. ``(1, 1, 28, 28)``).
        acts: ``{"conv1": (C, 28, 28), "conv2": (C, 14, 14)}`` from
            :func:`mnistlab.inspect.activations`.
        model: name for the title.
        caption: text under the input, e.g. ``"true 7, pred 7"``.
    """
    layers = [name for name in ("conv1", "conv2") if name in acts]
    cols = 8
    rows = max(math.ceil(len(acts[name]) / cols) for name in layers)
    fig = new_figure(2.3 + 6.6 * len(layers), 0.72 * rows + 1.1)
    fig.suptitle(_title(model, "feature maps after ReLU (before pooling)"))
    subs = fig.subfigures(1, 1 + len(layers), width_ratios=[2.0] + [6.0] * len(layers),
                          wspace=0.02)
    ax = subs[0].add_subplot()
    ax.imshow(np.asarray(image.detach().float().cpu().reshape(28, 28)), cmap="gray",
              vmin=0, vmax=1)
    ax.set(xticks=[], yticks=[], title="input")
    if caption:
        ax.set_xlabel(caption, fontsize=9)
    for sub, name in zip(subs[1:], layers, strict=True):
        maps = acts[name].detach().float().cpu()  # (C, H, W)
        vmax = max(float(maps.max()), 1e-12)
        axes = sub.subplots(rows, cols, squeeze=False, gridspec_kw={"wspace": 0.05,
                                                                     "hspace": 0.05})
        im = None
        for i, a in enumerate(axes.flat):
            a.set(xticks=[], yticks=[])
            if i >= len(maps):
                a.remove()
                continue
            im = a.imshow(maps[i].numpy(), cmap=ACT_CMAP, vmin=0, vmax=vmax)
        h, w = maps.shape[1:]
        sub.suptitle(f"{name}: {len(maps)} maps of {h}x{w}", fontsize=10)
        sub.colorbar(im, ax=axes, shrink=0.85, label="activation", pad=0.02)
    return fig


def occlusion(images: torch.Tensor, labels: torch.Tensor, result: OcclusionResult,
              patch: int, stride: int, model: str = "", cols: int = 10) -> Figure:
    """Report fig. 11: each image above its occlusion map of the true-class probability.

    Map pixel ``(i, j)`` is the probability with the patch's top-left corner at
    ``(i * stride, j * stride)``; black = 0, white = 1 on every map. A red square marks
    the worst patch on the image and a red ring the worst cell on the map.
    """
    from matplotlib.patches import Rectangle

    n = len(images)
    cols = min(cols, n)
    blocks = math.ceil(n / cols)
    fig = new_figure(1.5 * cols + 1.0, 3.6 * blocks + 0.5)
    fig.suptitle(_title(model, f"occlusion, P(true class) with a {patch}x{patch} patch of "
                               f"value {result.fill:g} slid {stride} px at a time"))
    grid = fig.add_gridspec(2 * blocks, cols)
    im = None
    axes = []
    for k in range(n):
        b, c = divmod(k, cols)
        top, bottom = fig.add_subplot(grid[2 * b, c]), fig.add_subplot(grid[2 * b + 1, c])
        axes += [top, bottom]
        r0, c0 = (int(v) for v in result.argmin[k])
        top.imshow(np.asarray(images[k].detach().float().cpu().reshape(28, 28)), cmap="gray",
                   vmin=0, vmax=1)
        top.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), patch, patch, fill=False,
                                edgecolor="red", lw=1.2))
        top.set_title(f"true {int(labels[k])}\nP = {float(result.base_prob[k]):.2f}",
                      fontsize=8)
        im = bottom.imshow(result.maps[k].numpy(), cmap=PROB_CMAP, vmin=0, vmax=1,
                           interpolation="nearest")
        bottom.plot(c0 // stride, r0 // stride, "o", ms=7, mfc="none", mec="red", mew=1.3)
        bottom.set_title(f"min {float(result.min_prob[k]):.2f}\n"
                         f"pred {int(result.pred_at_min[k])}", fontsize=8)
        for a in (top, bottom):
            a.set(xticks=[], yticks=[])
    fig.colorbar(im, ax=axes, shrink=0.6, label="P(true class)")
    return fig
