"""Inside the models: conv filters (report figs. 7-8), feature maps, occlusion (fig. 11).

Weights use one diverging scale centred on zero per figure (red positive, blue
negative); feature maps one sequential scale per layer; occlusion maps grey
probabilities on a fixed [0, 1] scale, so every panel reads the same way.

Filter figures exist per conv layer (:func:`filter_figures`): a layer reading the
1-channel input gets ``<layer>_filters``, a deeper one ``<layer>_filters_channel0`` and
``<layer>_filters_all``; for ``MnistCNN`` that is ``conv1_filters``,
``conv2_filters_channel0`` and ``conv2_filters_all``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Rectangle

from mnistlab.core.figures import new_figure
from mnistlab.visualize.occlusion import OcclusionResult

WEIGHT_CMAP = "RdBu_r"
ACT_CMAP = "magma"
PROB_CMAP = "viridis"  # per-image range: the brightest cell is that map's maximum
SIGNED_CMAP = "RdBu_r"
SEPARATOR = "#3a3a3a"  # between tiles of a mosaic


def _weights(w: torch.Tensor) -> torch.Tensor:
    """A layer's weights ``(C_out, C_in, kh, kw)`` as float32 on the CPU, for drawing."""
    return w.detach().float().cpu()


def _symmetric_limit(w: torch.Tensor) -> float:
    """Half-width of a colour scale centred on zero that holds every value."""
    return max(float(w.abs().max()), 1e-12)


def _title(model: str, text: str) -> str:
    return f"{model}: {text}" if model else text


def _grid(fig: Figure | SubFigure, rows: int, cols: int, n: int, **kwargs) -> list[Axes]:
    """The first ``n`` axes of a ``rows x cols`` grid, without ticks; the other cells are
    removed. A colorbar must be given only these: a removed axes belongs to no figure, and
    matplotlib refuses to place a bar beside it (64 and 128 channels once crashed here)."""
    axes = fig.subplots(rows, cols, squeeze=False, **kwargs)
    for i, ax in enumerate(axes.flat):
        ax.set(xticks=[], yticks=[])
        if i >= n:
            ax.remove()
    return list(axes.flat[:n])


def _kernel_grid(kernels: torch.Tensor, title: str, cols: int = 8) -> Figure:
    """Small 2-D kernels ``(K, h, w)`` one per axes, one shared zero-centred scale."""
    k = len(kernels)
    cols = min(cols, k)
    rows = math.ceil(k / cols)
    m = _symmetric_limit(kernels)
    fig = new_figure(1.05 * cols + 1.2, 1.15 * rows + 0.6)
    fig.suptitle(title)
    kept = _grid(fig, rows, cols, k)
    im = None
    for i, ax in enumerate(kept):
        im = ax.imshow(kernels[i].numpy(), cmap=WEIGHT_CMAP, vmin=-m, vmax=m)
        ax.set_title(f"#{i}", fontsize=8, pad=2)
    fig.colorbar(im, ax=kept, shrink=0.8, label="weight")
    return fig


def filters(w: torch.Tensor, *, layer: str, model: str = "") -> Figure:
    """Every kernel of a layer reading one input channel (report fig. 7 for ``conv1``),
    one per output channel, one colour scale centred on zero.

    Args:
        w: the layer's weights ``(C_out, 1, kh, kw)`` (input channel 0 is drawn).
        layer: its name, e.g. ``"conv1"``.
        model: the model's name, for the title.
    """
    w = _weights(w)  # (C_out, C_in, kh, kw)
    kh, kw = w.shape[-2:]
    return _kernel_grid(
        w[:, 0], _title(model, f"{layer} filters ({kh}x{kw}, one per output channel)")
    )


def filters_channel0(w: torch.Tensor, *, layer: str, model: str = "") -> Figure:
    """A layer's kernels applied to input channel 0 (report fig. 8 for ``conv2``)."""
    w = _weights(w)  # (C_out, C_in, kh, kw)
    return _kernel_grid(w[:, 0], _title(model, f"{layer} filters on input channel 0"))


def _mosaic(tiles: np.ndarray, gap: int = 1) -> np.ndarray:
    """Tile ``(R, C, h, w)`` into one ``(R*(h+gap)-gap, C*(w+gap)-gap)`` image; gaps are NaN."""
    r, c, h, w = tiles.shape
    out = np.full((r * (h + gap) - gap, c * (w + gap) - gap), np.nan, dtype=np.float64)
    for i in range(r):
        for j in range(c):
            out[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = tiles[i, j]
    return out


def _tick_step(n: int) -> int:
    """Label every channel up to 16, else about 8 labels (every 4th of 32)."""
    return 1 if n <= 16 else max(4, math.ceil(n / 8))


def filters_all(w: torch.Tensor, *, layer: str, model: str = "") -> Figure:
    """Every kernel of a layer as one mosaic: rows = output channel, columns = input
    channel (``conv2_filters_all`` for ``MnistCNN``)."""
    import matplotlib as mpl

    w = _weights(w)  # (C_out, C_in, kh, kw)
    c_out, c_in, kh, kw = w.shape
    m = _symmetric_limit(w)
    cmap = mpl.colormaps[WEIGHT_CMAP].with_extremes(bad=SEPARATOR)
    fig = new_figure(9, 8.2)
    ax = fig.add_subplot()
    im = ax.imshow(_mosaic(w.numpy()), cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
    step = _tick_step(max(c_out, c_in))
    ax.set_xticks(
        [j * (kw + 1) + (kw - 1) / 2 for j in range(0, c_in, step)],
        [str(j) for j in range(0, c_in, step)],
    )
    ax.set_yticks(
        [i * (kh + 1) + (kh - 1) / 2 for i in range(0, c_out, step)],
        [str(i) for i in range(0, c_out, step)],
    )
    ax.tick_params(length=0, labelsize=8)
    ax.set(
        xlabel="input channel",
        ylabel="output channel",
        title=_title(model, f"all {layer} filters ({c_out}x{c_in} kernels of {kh}x{kw})"),
    )
    fig.colorbar(im, ax=ax, shrink=0.8, label="weight")
    return fig


def filter_figures(weights: Mapping[str, torch.Tensor], model: str = "") -> dict[str, Figure]:
    """Figure name -> figure, for every conv layer of :func:`conv_filters`'s dict.

    A layer with one input channel: ``<layer>_filters``. More: ``<layer>_filters_channel0``
    and ``<layer>_filters_all`` (channel 0 alone would be one kernel in many). Empty for
    a model without a conv layer.
    """
    figs = {}
    for layer, w in weights.items():
        if w.shape[1] == 1:
            figs[f"{layer}_filters"] = filters(w, layer=layer, model=model)
        else:
            figs[f"{layer}_filters_channel0"] = filters_channel0(w, layer=layer, model=model)
            figs[f"{layer}_filters_all"] = filters_all(w, layer=layer, model=model)
    return figs


def activations(
    image: torch.Tensor, acts: Mapping[str, torch.Tensor], model: str = "", caption: str = ""
) -> Figure:
    """The input beside every conv layer's rectified feature maps (one scale per layer).

    Args:
        image: the input, 784 pixels in [0, 1] (any shape, e.g. ``(1, 1, 28, 28)``).
        acts: ``{"conv1": (C, 28, 28), "conv2": (C, 14, 14), ...}`` from
            :func:`mnistlab.visualize.features.activations`; at least one layer.
        model: name for the title.
        caption: text under the input, e.g. ``"true 7, pred 7"``.

    Returns:
        Figure with ``1 + sum(C) + len(acts)`` axes (input, maps, a colorbar per layer).
    """
    if not acts:
        raise ValueError("no feature maps to draw (a model without a conv layer)")
    layers = list(acts)
    cols = 8
    rows = max(math.ceil(len(acts[name]) / cols) for name in layers)
    fig = new_figure(2.3 + 6.6 * len(layers), 0.72 * rows + 1.1)
    fig.suptitle(_title(model, "feature maps after ReLU (before pooling)"))
    subs = fig.subfigures(1, 1 + len(layers), width_ratios=[2.0] + [6.0] * len(layers), wspace=0.02)
    ax = subs[0].add_subplot()
    ax.imshow(np.asarray(image.detach().float().cpu().reshape(28, 28)), cmap="gray", vmin=0, vmax=1)
    ax.set(xticks=[], yticks=[], title="input")
    if caption:
        ax.set_xlabel(caption, fontsize=9)
    for sub, name in zip(subs[1:], layers, strict=True):
        maps = acts[name].detach().float().cpu()  # (C, H, W)
        vmax = max(float(maps.max()), 1e-12)
        kept = _grid(sub, rows, cols, len(maps), gridspec_kw={"wspace": 0.05, "hspace": 0.05})
        im = None
        for i, a in enumerate(kept):
            im = a.imshow(maps[i].numpy(), cmap=ACT_CMAP, vmin=0, vmax=vmax)
        h, w = maps.shape[1:]
        sub.suptitle(f"{name}: {len(maps)} maps of {h}x{w}", fontsize=10)
        sub.colorbar(im, ax=kept, shrink=0.85, label="activation", pad=0.02)
    return fig


def map_array(t: torch.Tensor) -> np.ndarray:
    """One 28x28 (or H'xW') map as float64 numpy."""
    t = t.detach().double().cpu()
    return np.asarray(t.reshape(t.shape[-2:]))


def outline(ax: Axes, image: np.ndarray, color: str) -> None:
    """Thin contour of the digit (pixel value 0.5) for orientation on a map."""
    if image.min() < 0.5 < image.max():
        ax.contour(image, levels=[0.5], colors=color, linewidths=0.6, alpha=0.8)


def occlusion(
    images: torch.Tensor,
    labels: torch.Tensor,
    result: OcclusionResult,
    *,
    model: str = "",
    show_input: bool = True,
) -> Figure:
    """Occlusion, readable: where does a patch hurt the true class, and who takes over?

    One column per image. Row "input" (optional): the image, the patch drawn at the
    position of the largest logit drop. Row "P(true)": the true-class probability per
    patch position, on a per-image colour range with its own colorbar. Row "logit
    drop": ``logit_true(x) - logit_true(occluded)`` (diverging, per-image range); a
    marker at the largest drop is annotated ``true -> c``, ``c`` the argmax class with
    the patch there (e.g. ``0 -> 6``). Maps are placed at the patch *centres* in pixel
    coordinates, over a thin outline of the digit.

    Args:
        images: pixels in [0, 1], ``(N, 1, 28, 28)``.
        labels: true classes ``(N,)``.
        result: the occlusion maps (with logits) of those images.
        model: the model's name, for the title.
        show_input: draw the input row.

    Returns:
        Figure with ``(3 if show_input else 2) * N`` image axes plus ``2 * N`` colorbars.
    """
    prob_maps, logit_drop_maps, takeover_class_maps = (result.maps, result.logit_drop, result.preds)
    patch, stride, base_probs = result.patch, result.stride, result.base_prob
    n = len(images)
    rows = 3 if show_input else 2
    fig = new_figure(2.0 * n + 0.4, 2.25 * rows + 0.5)
    fig.suptitle(
        _title(
            model,
            f"occlusion with a {patch}x{patch} patch of value "
            f"{result.fill:g} (stride {stride}); maps at patch centres",
        )
    )
    axes = fig.subplots(rows, n, squeeze=False)
    h, w = prob_maps.shape[-2:]
    off = (patch - 1) / 2  # patch centre relative to its top-left pixel
    extent = (
        off - stride / 2,
        off + (w - 1) * stride + stride / 2,
        off + (h - 1) * stride + stride / 2,
        off - stride / 2,
    )  # left, right, bottom, top
    for k in range(n):
        image, true = map_array(images[k]), int(labels[k])
        drop = map_array(logit_drop_maps[k])
        i, j = np.unravel_index(int(np.argmax(drop)), drop.shape)
        taker = int(takeover_class_maps[k][i, j])
        cx, cy = off + j * stride, off + i * stride  # patch centre, pixel coordinates
        col = axes[:, k]
        if show_input:
            ax = col[0]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.add_patch(
                Rectangle(
                    (j * stride - 0.5, i * stride - 0.5),
                    patch,
                    patch,
                    fill=False,
                    edgecolor="red",
                    lw=1.3,
                )
            )
            p = "" if base_probs is None else f", P = {float(base_probs[k]):.2f}"
            ax.set_title(f"true {true}{p}", fontsize=8)
        prob = map_array(prob_maps[k])
        lo, hi = float(prob.min()), float(prob.max())
        ax = col[-2]
        im = ax.imshow(
            prob,
            cmap=PROB_CMAP,
            vmin=lo,
            vmax=max(hi, lo + 1e-9),
            extent=extent,
            interpolation="nearest",
        )
        outline(ax, image, "w")
        ax.set_title(f"P(true {true}) per patch\nmin {lo:.3g}", fontsize=8)
        fig.colorbar(im, ax=ax, location="bottom", shrink=0.9, aspect=14)
        ax = col[-1]
        lim = max(float(np.abs(drop).max()), 1e-9)
        im = ax.imshow(
            drop, cmap=SIGNED_CMAP, vmin=-lim, vmax=lim, extent=extent, interpolation="nearest"
        )
        outline(ax, image, "k")
        ax.plot(cx, cy, "x", color="k", ms=7, mew=1.8)
        ax.annotate(
            f"{true} \u2192 {taker}",
            (cx, cy),
            xytext=(0, 7),
            textcoords="offset points",
            ha="center",
            fontsize=9,
            fontweight="bold",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.85, "lw": 0},
        )
        ax.set_title(f"drop of logit {true}\nmax {drop[i, j]:.3g}", fontsize=8)
        fig.colorbar(im, ax=ax, location="bottom", shrink=0.9, aspect=14)
        for ax in col:
            ax.set(
                xticks=[],
                yticks=[],
                xlim=(-0.5, image.shape[1] - 0.5),
                ylim=(image.shape[0] - 0.5, -0.5),
            )
    return fig
