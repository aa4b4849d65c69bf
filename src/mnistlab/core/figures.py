"""What every figure shares: the headless backend, saving, and the registry of figures.

``plots/<stage>/<item>/<name>.png`` is drawn by the function ``<name>`` in the figures
module of the stage's package (``src/mnistlab/<stage>/figures.py``; for an attack form,
``src/mnistlab/attacks/<form>/figures.py``). Figure functions return a matplotlib
Figure; they do not save, show or log it (stages do, through ``write_outputs``).

:data:`FIGURES` names every figure the pipeline draws. The stages' figure directories
must hold exactly these (a pipeline test checks it), and the report embeds them from
here, failing when one is missing rather than rendering a placeholder.
"""

from __future__ import annotations

import fnmatch
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


# kind -> figure names (glob patterns where the names depend on params, e.g. targets).
FIGURES: dict[str, tuple[str, ...]] = {
    "train": ("loss_curves", "val_accuracy"),
    "evaluate": ("confusion", "samples", "misclassified"),
    "visualize": (
        "conv1_filters",
        "conv2_filters_channel0",
        "conv2_filters_all",
        "activations",
        "occlusion",
    ),
    "attribution": ("attribution_grid", "deletion_curves", "sanity_check"),
    "attack/class_model": ("class_images", "class_cost"),
    "attack/targeted": ("targeted_images_*",),
    "attack/noise": ("noise_to_*", "noise_from_*", "noise_transfer"),
    "attack/fgsm": ("robustness",),
    "attack/pgd": ("robustness",),
    "attack/strong": ("robust_accuracy",),
    "transfer": ("transfer_matrix",),
    "compare": ("min_eps_cdf", "class_images", "conv1_filters", "occlusion", "attribution"),
}


def figure_kind(figure_dir: str | Path) -> str:
    """``plots/attack/noise-cnn`` -> ``attack/noise``; ``plots/train/cnn`` -> ``train``."""
    parts = Path(figure_dir).parts
    stage = parts[parts.index("plots") + 1]
    if stage == "attack":
        return f"attack/{parts[parts.index('plots') + 2].rsplit('-', 1)[0]}"
    return stage


def registry_mismatch(kind: str, names: list[str]) -> tuple[list[str], list[str]]:
    """``(missing patterns, unexpected names)`` of figure ``names`` against :data:`FIGURES`."""
    patterns = FIGURES[kind]
    missing = [p for p in patterns if not fnmatch.filter(names, p)]
    unexpected = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in patterns)]
    return missing, unexpected
