"""What every figure shares: the headless backend and saving.

``plots/<stage>/<item>/<name>.png`` is drawn by the function ``<name>`` in the figures
module of the stage's package (``src/mnistlab/<stage>/figures.py``; for an attack form,
``src/mnistlab/attacks/<form>/figures.py``). Figure functions return a matplotlib
Figure; they do not save, show or log it (stages do, through ``write_outputs``). The
list of every figure lives with its one reader, the report (``mnistlab.report.registry``).
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
