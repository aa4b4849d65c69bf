"""The registry of figures: every figure the pipeline draws, which the report embeds.

:data:`FIGURES` names them per stage kind. The stages' figure directories must hold
exactly these (a pipeline test checks it), and the report embeds them from here, failing
when one is missing rather than rendering a placeholder. It lives with the report, its one
reader, so adding a figure here reruns the report alone.

Two openings keep a growing study drawable without a registry edit:

- an attack form with no entry (one added to ``params.yaml`` after these) may draw any
  figures (:data:`ANY`); the report shows every PNG of its folder, sorted;
- a figure that does not apply to a model (filters of an MLP) is absent, not missing,
  when the stage's metrics say so under ``not_applicable`` (:func:`absent_figures`);
  the deeper conv layers' filters are drawn for as many layers as a model has
  (:data:`OPTIONAL`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# kind -> figure names (glob patterns where the names depend on params, e.g. targets).
FIGURES: dict[str, tuple[str, ...]] = {
    "train": ("loss_curves", "val_accuracy"),
    "evaluate": ("confusion", "samples", "misclassified"),
    # conv<k>_filters_*: one pair per conv layer after the first (as many as the model has)
    "visualize": (
        "conv1_filters",
        "conv*_filters_channel0",
        "conv*_filters_all",
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
    # form_<form>: each attack form's table of metrics (any form, hence the pattern)
    "compare": (
        "min_eps_cdf",
        "class_images",
        "conv1_filters",
        "occlusion",
        "attribution",
        "form_*",
    ),
}

# The figures of an attack form the registry does not name: any, none required.
ANY = ("*",)

# Patterns that may match nothing even where the stage applies: a model with a single
# conv layer has no deeper filters.
OPTIONAL: dict[str, tuple[str, ...]] = {
    "visualize": ("conv*_filters_channel0", "conv*_filters_all")
}

# Which figures a stage's ``not_applicable`` entry stands for, per kind; an entry not
# listed here stands for the figure of its own name (compare's ``min_eps_cdf``).
NOT_APPLICABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "visualize": {
        "filters": ("conv1_filters", "conv*_filters_channel0", "conv*_filters_all"),
        "activations": ("activations",),
    },
    "transfer": {"class_image_judges": ("class_images_seeded",)},
}


def patterns(kind: str) -> tuple[str, ...]:
    """The figure names (globs) a stage of ``kind`` may draw.

    Raises:
        KeyError: ``kind`` is neither registered nor an attack form's.
    """
    if kind in FIGURES:
        return FIGURES[kind]
    if kind.startswith("attack/"):
        return ANY
    raise KeyError(f"no figures registered for {kind!r}")


def absent_figures(kind: str, not_applicable: Mapping[str, Any] | None) -> dict[str, str]:
    """``{figure: reason}`` for the figures a stage's ``not_applicable`` metrics entry
    (``{"<thing>": "<reason>"}``) says it did not draw."""
    out = {}
    for key, why in (not_applicable or {}).items():
        for name in NOT_APPLICABLE.get(kind, {}).get(key, (key,)):
            out[name] = str(why)
    return out


def figure_kind(figure_dir: str | Path) -> str:
    """``plots/attack/noise-cnn`` -> ``attack/noise``; ``plots/train/cnn`` -> ``train``."""
    parts = Path(figure_dir).parts
    stage = parts[parts.index("plots") + 1]
    if stage == "attack":
        return f"attack/{parts[parts.index('plots') + 2].rsplit('-', 1)[0]}"
    return stage


def registry_mismatch(
    kind: str, names: list[str], not_applicable: Mapping[str, Any] | None = None
) -> tuple[list[str], list[str]]:
    """``(missing patterns, unexpected names)`` of figure ``names`` against the registry.

    Args:
        not_applicable: the stage's ``not_applicable`` metrics entry, if any: the figures
            it stands for may be absent.
    """
    allowed = patterns(kind)
    optional = OPTIONAL.get(kind, ())
    required = () if allowed == ANY else [p for p in allowed if p not in optional]
    absent = absent_figures(kind, not_applicable)
    missing = [p for p in required if not fnmatch.filter(names, p) and p not in absent]
    unexpected = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in allowed)]
    return missing, unexpected
