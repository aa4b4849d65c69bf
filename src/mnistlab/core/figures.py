"""Figures, one module per stage: ``plots/<stage>/<item>/<name>.png`` is drawn by
``mnistlab.figures.<stage>.<name>``. Functions return a matplotlib Figure; they do
not save, show or log it (stages do, through :func:`save_figure`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI machines or servers

from matplotlib.figure import Figure  # noqa: E402

from mnistlab.core.files import atomic_path  # noqa: E402

DPI = 110


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically and free it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def new_figure(width: float, height: float) -> Figure:
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width, height), layout="constrained")
