"""The ``compare`` stage: the models side by side, from the arrays their stages saved.

What robustness changes (minimal-eps CDFs, class images, filters, occlusion maps) and,
when the attribution stage has run, their attribution maps: each figure puts every
model in one picture so the reader compares like with like. Figures in :mod:`.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mnistlab.core.outputs import StageOutputs


def compute(
    arrays: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], *, hi: float
) -> StageOutputs:
    """Cross-model figures and the minimal-eps summary.

    Args:
        arrays: ``{kind: {model: arrays}}`` for kinds ``strong``, ``class_model``,
            ``visualize`` and ``attribution`` (as saved by those stages).
        hi: the minimal-eps search ceiling (images never flipped lie beyond it).
    """
    from mnistlab.compare import figures

    min_eps = {m: a["min_eps"] for m, a in arrays["strong"].items()}
    metrics = {
        "min_eps_median": {
            m: (float(np.median(v)) if np.isfinite(np.median(v)) else None)
            for m, v in min_eps.items()
        }
    }
    figs = {
        "min_eps_cdf": figures.min_eps_cdf(min_eps, hi=hi),
        "class_images": figures.class_images(
            {m: a["images"] for m, a in arrays["class_model"].items()}
        ),
        "conv1_filters": figures.conv1_filters(
            {m: a["conv1"] for m, a in arrays["visualize"].items()}
        ),
        "occlusion": figures.occlusion({m: a for m, a in arrays["visualize"].items()}),
        "attribution": figures.attribution(arrays["attribution"]),
    }
    return StageOutputs(metrics=metrics, figures=figs)
