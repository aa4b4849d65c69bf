"""The registry of figures: every figure the pipeline draws, which the report embeds.

:data:`FIGURES` names them per stage kind. The stages' figure directories must hold
exactly these (a pipeline test checks it), and the report embeds them from here, failing
when one is missing rather than rendering a placeholder. It lives with the report, its one
reader, so adding a figure here reruns the report alone.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

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
    "transfer": ("transfer_matrix", "class_images_seeded"),
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
