"""Cross-model figures of the ``compare`` stage: ``plots/compare/<name>.png``.

Each takes ``{model: array}`` and draws every model in one figure, in the same order
and on the same colour scale where the quantity is comparable.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from mnistlab.core.figures import new_figure

METHODS = ("saliency", "integrated_gradients", "grad_cam", "occlusion")


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def min_eps_cdf(per_model: Mapping[str, np.ndarray], *, hi: float) -> Figure:
    """CDF of the smallest L-inf eps that flips each image, one line per model.

    Images the strong attack never flipped up to ``hi`` stay off the curve, which then
    ends below 100%.
    """
    fig = new_figure(6, 3.8)
    ax = fig.add_subplot()
    for name, values in per_model.items():
        v = np.sort(np.asarray(values, dtype=float))
        frac = np.arange(1, len(v) + 1) / max(len(v), 1)
        finite = np.isfinite(v)
        median = float(np.median(v)) if len(v) else float("inf")
        note = f"median {median:.3f}" if np.isfinite(median) else f"median > {hi:g}"
        ax.step(
            np.r_[0, v[finite]],
            100 * np.r_[0, frac[finite]],
            where="post",
            label=f"{name} ({note})",
        )
    ax.axvline(0.3, color="grey", ls=":", lw=1)
    ax.set(
        xlabel="smallest L-inf eps that flips the image (strong ensemble)",
        ylabel="test images flipped (%)",
        xlim=(0, hi),
        ylim=(0, 101),
        title="Minimal adversarial eps per image",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def class_images(per_model: Mapping[str, np.ndarray]) -> Figure:
    """The images each model grows from noise for classes 0-9: one row per model."""
    names = list(per_model)
    fig = new_figure(13, 1.45 * len(names) + 0.5)
    fig.suptitle("Class images grown from noise (rows: models; columns: classes 0-9)")
    axes = fig.subplots(len(names), 10, squeeze=False)
    for r, name in enumerate(names):
        for k in range(10):
            ax = axes[r, k]
            ax.imshow(np.asarray(per_model[name][k]).squeeze(), cmap="gray", vmin=0, vmax=1)
            _bare(ax)
            if k == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0:
                ax.set_title(str(k), fontsize=9)
    return fig


def conv1_filters(per_model: Mapping[str, np.ndarray], n: int = 16) -> Figure:
    """The first ``n`` conv1 kernels of each model, each model on its own symmetric scale."""
    names = list(per_model)
    fig = new_figure(0.8 * n, 1.0 * len(names) + 0.5)
    fig.suptitle(f"conv1 filters (first {n}; blue < 0 < red)")
    axes = fig.subplots(len(names), n, squeeze=False)
    for r, name in enumerate(names):
        w = np.asarray(per_model[name])[:n, 0]
        lim = float(np.abs(w).max()) or 1.0
        for k in range(n):
            axes[r, k].imshow(w[k], cmap="RdBu_r", vmin=-lim, vmax=lim)
            _bare(axes[r, k])
        axes[r, 0].set_ylabel(name, fontsize=9)
    return fig


def occlusion(per_model: Mapping[str, Mapping[str, np.ndarray]], n: int = 6) -> Figure:
    """True-class probability under occlusion for the same test images, one row per model.

    Each map has its own colour range (the robust model is less sure everywhere).
    """
    names = list(per_model)
    first = per_model[names[0]]
    n = min(n, len(first["images"]))
    fig = new_figure(1.6 * (n + 1), 1.6 * len(names) + 0.6)
    fig.suptitle("Occlusion: P(true class) as the grey patch moves (per-map colour range)")
    axes = fig.subplots(len(names) + 1, n, squeeze=False)
    for j in range(n):
        axes[0, j].imshow(np.asarray(first["images"][j]).squeeze(), cmap="gray", vmin=0, vmax=1)
        axes[0, j].set_title(f"label {int(first['labels'][j])}", fontsize=8)
        _bare(axes[0, j])
    axes[0, 0].set_ylabel("image", fontsize=9)
    for r, name in enumerate(names, start=1):
        for j in range(n):
            m = np.asarray(per_model[name]["maps"][j])
            axes[r, j].imshow(m, cmap="magma", vmin=float(m.min()), vmax=float(m.max()))
            axes[r, j].set_title(f"{m.min():.2f}-{m.max():.2f}", fontsize=7)
            _bare(axes[r, j])
        axes[r, 0].set_ylabel(name, fontsize=9)
    return fig


def attribution(per_model: Mapping[str, Mapping[str, np.ndarray]], n: int = 4) -> Figure:
    """Every attribution method on the same images for every model (rows: model x image)."""
    names = list(per_model)
    first = per_model[names[0]]
    n = min(n, len(first["images"]))
    rows = len(names) * n
    fig = new_figure(1.5 * (len(METHODS) + 1), 1.45 * rows + 0.6)
    fig.suptitle("Attributions of the three models (red: for the true class)")
    axes = fig.subplots(rows, len(METHODS) + 1, squeeze=False)
    for i, name in enumerate(names):
        a = per_model[name]
        for j in range(n):
            r = i * n + j
            axes[r, 0].imshow(np.asarray(a["images"][j]).squeeze(), cmap="gray", vmin=0, vmax=1)
            axes[r, 0].set_ylabel(f"{name}\nlabel {int(a['labels'][j])}", fontsize=7)
            for c, method in enumerate(METHODS, start=1):
                m = np.asarray(a[method][j]).squeeze()
                lim = float(np.abs(m).max()) or 1.0
                axes[r, c].imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
                if r == 0:
                    axes[r, c].set_title(method.replace("_", " "), fontsize=8)
            for c in range(len(METHODS) + 1):
                _bare(axes[r, c])
    return fig
