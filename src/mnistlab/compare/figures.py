"""Cross-model figures of the ``compare`` stage: ``plots/compare/<name>.png``.

Each takes ``{model: array}`` and draws every model in one figure, in the same order
and on the same colour scale where the quantity is comparable; sizes follow the number
of models, and a model without the piece drawn gets a panel saying "not applicable".
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from mnistlab.core.figures import new_figure

METHODS = ("saliency", "integrated_gradients", "grad_cam", "occlusion")
MAX_ROWS = 12  # rows of the attribution figure: images per model shrink as models are added


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


def _not_applicable(ax, why: str) -> None:
    """An empty panel that says why it is empty (a model without this piece); the text
    stays out of the layout, so a long reason does not widen its column."""
    ax.set_axis_off()
    text = ax.text(0.5, 0.5, f"not applicable:\n{why}", ha="center", va="center", fontsize=7)
    text.set_in_layout(False)


def conv1_filters(
    per_model: Mapping[str, np.ndarray | None],
    n: int = 16,
    *,
    not_applicable: Mapping[str, str] | None = None,
) -> Figure:
    """The first ``n`` conv1 kernels of each model, each model on its own symmetric scale.

    A model without conv1 filters (``None``: an MLP) gets a row that says why
    (``not_applicable[model]``); one with fewer than ``n`` kernels leaves the rest blank.
    """
    names = list(per_model)
    na = not_applicable or {}
    fig = new_figure(0.8 * n, 1.0 * len(names) + 0.5)
    fig.suptitle(f"conv1 filters (first {n}; blue < 0 < red)")
    axes = fig.subplots(len(names), n, squeeze=False)
    for r, name in enumerate(names):
        axes[r, 0].set_ylabel(name, fontsize=9)
        if per_model[name] is None:  # the row says why, in its middle; the label stays
            _bare(axes[r, 0])
            axes[r, 0].spines[:].set_visible(False)
            for ax in axes[r, 1:]:
                ax.set_axis_off()
            _not_applicable(axes[r, n // 2], na.get(name, "no conv1 filters"))
            continue
        w = np.asarray(per_model[name])[:n, 0]  # (<= n, k, k): input channel 0
        lim = float(np.abs(w).max()) or 1.0
        for k in range(n):
            if k < len(w):
                axes[r, k].imshow(w[k], cmap="RdBu_r", vmin=-lim, vmax=lim)
            _bare(axes[r, k])
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


def attribution(
    per_model: Mapping[str, Mapping[str, np.ndarray]], n: int = 4, max_rows: int = MAX_ROWS
) -> Figure:
    """Every attribution method on the same images for every model (rows: model x image).

    Fewer images per model as models are added, so the figure stays at most ``max_rows``
    rows (at least one image each); a method a model has no map for (Grad-CAM without a
    conv layer) is a panel that says so.
    """
    names = list(per_model)
    first = per_model[names[0]]
    n = max(1, min(n, len(first["images"]), max_rows // len(names)))
    rows = len(names) * n
    fig = new_figure(1.5 * (len(METHODS) + 1), 1.45 * rows + 0.6)
    fig.suptitle("Attributions side by side (red: for the true class)")
    axes = fig.subplots(rows, len(METHODS) + 1, squeeze=False)
    for i, name in enumerate(names):
        a = per_model[name]
        for j in range(n):
            r = i * n + j
            axes[r, 0].imshow(np.asarray(a["images"][j]).squeeze(), cmap="gray", vmin=0, vmax=1)
            axes[r, 0].set_ylabel(f"{name}\nlabel {int(a['labels'][j])}", fontsize=7)
            for c, method in enumerate(METHODS, start=1):
                if r == 0:
                    axes[r, c].set_title(method.replace("_", " "), fontsize=8)
                if method not in a:
                    _not_applicable(axes[r, c], f"no {method.replace('_', ' ')} map")
                    continue
                m = np.asarray(a[method][j]).squeeze()
                lim = float(np.abs(m).max()) or 1.0
                axes[r, c].imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
            for c in range(len(METHODS) + 1):
                _bare(axes[r, c])
    return fig


MAX_FORM_ROWS = 40  # a form's figure lists at most this many metrics (the JSON holds all)


def form_table(form: str, table: Mapping[str, Mapping[str, float]]) -> Figure:
    """One attack form's numeric metrics as a table image, a row per metric and a column
    per model: scales differ (counts beside rates), so a table reads where bars would not.
    With two or more models only the metrics that differ between them are shown (the
    settings every model shares, such as ``n_images``, say nothing about the models)."""
    models = list(table)
    keys = list(dict.fromkeys(k for row in table.values() for k in row))
    if len(models) > 1:
        keys = [k for k in keys if len({table[m].get(k) for m in models}) > 1]
    keys = keys[:MAX_FORM_ROWS]
    fig = new_figure(max(5.0, 2.2 + 1.3 * len(models)), 0.28 * (len(keys) + 1) + 0.9)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(f"attack form {form}: the metrics that differ between the models")
    if not keys:
        ax.text(0.5, 0.5, "no numeric metric differs", ha="center", va="center")
        return fig
    cells = [[_cell(table[m].get(k)) for m in models] for k in keys]
    drawn = ax.table(cellText=cells, rowLabels=keys, colLabels=models, loc="center")
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(7)
    return fig


def _cell(value: float | None) -> str:
    """A metric as the table shows it: an int whole, a float to 4 significant digits."""
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"
