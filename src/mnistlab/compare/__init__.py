"""The ``compare`` stage: the models side by side, from what their stages saved.

What robustness changes (minimal-eps CDFs, class images, filters, occlusion maps) and
what each model looks at (attribution maps): each figure puts every model in one picture
so the reader compares like with like. Every attack form, the study's or a new one, also
gets a table of each model's numeric metrics, so a form added to ``params.yaml`` shows up
here with no code of its own. Figures in :mod:`.figures`.

What does not apply is said, never crashed on: a figure whose form is not in the params,
or a model without the piece a figure draws (an MLP has no conv1 filters), is listed in
the metrics under ``not_applicable`` (``{"<figure>": reason}`` for a figure not drawn,
``{"<figure>/<model>": reason}`` for one model's missing panels, which say so).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mnistlab.core.outputs import StageOutputs

# The arrays kinds the cross-model figures read; the first two are attack forms, which
# a study may leave out of params.yaml.
STRONG, CLASS_MODEL, VISUALIZE, ATTRIBUTION = "strong", "class_model", "visualize", "attribution"
FORM_FIGURE = "form_{form}"  # the per-form table figure, plots/compare/form_<form>.png


def scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number of one metrics JSON, nested sections flattened to dotted keys
    (``robust_accuracy.strong.0.3``), in its order: what any attack form's metrics can be
    compared by without knowing the form (bools, lists, strings and nulls are left out)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(scalars(v, f"{key}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[key] = v
    return out


def form_tables(
    attack_metrics: Mapping[str, Mapping[str, Mapping[str, Any]]], models: Sequence[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """``{form: {model: {metric: value}}}`` from ``{form: {model: metrics JSON}}``."""
    return {
        form: {m: scalars(per_model[m]) for m in models if m in per_model}
        for form, per_model in attack_metrics.items()
    }


def min_eps_medians(min_eps: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """The median smallest flipping eps per model; ``None`` when half never flipped."""
    return {
        m: (float(np.median(v)) if np.isfinite(np.median(v)) else None) for m, v in min_eps.items()
    }


def _lacking(
    per_model: Mapping[str, Mapping[str, np.ndarray]], keys: Sequence[str], what: str
) -> dict[str, str]:
    """``{model: reason}`` for the models whose arrays lack any of ``keys``: the panels a
    figure marks "not applicable" instead of failing on the whole study."""
    out = {}
    for m, a in per_model.items():
        missing = [k for k in keys if k not in a]
        if missing:
            out[m] = f"no {', '.join(missing)} in its {what} arrays"
    return out


def compute(
    arrays: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    *,
    models: Sequence[str],
    hi: float | None = None,
    attack_metrics: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> StageOutputs:
    """Cross-model figures, the minimal-eps summary and every form's table.

    Args:
        arrays: ``{kind: {model: arrays}}`` for kinds ``strong`` and ``class_model``
            (when those forms are in the params), ``visualize`` and ``attribution``, as
            saved by those stages. A kind left out skips its figures.
        models: the models, in the order of every figure's rows and every table.
        hi: the minimal-eps search ceiling (images never flipped lie beyond it).
        attack_metrics: ``{form: {model: metrics JSON}}`` of every attack stage.
    """
    from mnistlab.compare import figures

    tables = form_tables(attack_metrics or {}, models)
    metrics: dict[str, Any] = {}
    figs: dict[str, Any] = {}
    na: dict[str, str] = {}
    if STRONG in arrays:
        if hi is None:
            raise ValueError("hi: the minimal-eps ceiling is needed with the strong arrays")
        min_eps = {m: arrays[STRONG][m]["min_eps"] for m in models}
        metrics["min_eps_median"] = min_eps_medians(min_eps)
        figs["min_eps_cdf"] = figures.min_eps_cdf(min_eps, hi=hi)
    else:
        na["min_eps_cdf"] = "no strong attack form in params.yaml"
    if CLASS_MODEL in arrays:
        figs["class_images"] = figures.class_images(
            {m: arrays[CLASS_MODEL][m]["images"] for m in models}
        )
    else:
        na["class_images"] = "no class_model attack form in params.yaml"
    vis = {m: arrays[VISUALIZE][m] for m in models} if VISUALIZE in arrays else None
    if vis is not None:
        lacking = _lacking(vis, ["conv1"], "visualize")
        na.update({f"conv1_filters/{m}": why for m, why in lacking.items()})
        figs["conv1_filters"] = figures.conv1_filters(
            {m: a.get("conv1") for m, a in vis.items()}, not_applicable=lacking
        )
        figs["occlusion"] = figures.occlusion(vis)
    else:
        na["conv1_filters"] = na["occlusion"] = "no visualize arrays"
    if ATTRIBUTION in arrays:
        attr = {m: arrays[ATTRIBUTION][m] for m in models}
        lacking = _lacking(attr, figures.METHODS, "attribution")
        na.update({f"attribution/{m}": why for m, why in lacking.items()})
        figs["attribution"] = figures.attribution(attr)
    else:
        na["attribution"] = "no attribution arrays"
    for form, table in tables.items():
        figs[FORM_FIGURE.format(form=form)] = figures.form_table(form, table)
    metrics["forms"] = tables
    if na:
        metrics["not_applicable"] = na
    return StageOutputs(metrics=metrics, figures=figs)
