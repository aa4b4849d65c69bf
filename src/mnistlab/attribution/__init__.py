"""The ``attribution@<model>`` stage: which pixels each explanation method says matter,
and whether to trust it.

Methods (:mod:`.methods`, Captum where it has them): saliency, Integrated Gradients,
Grad-CAM on conv2, occlusion. Faithfulness (:mod:`.faithfulness`): deletion and
insertion curves against a random order. Sanity (:mod:`.sanity`): the cascading
model-randomisation test of Adebayo et al. 2018. Figures in :mod:`.figures`.
"""

from __future__ import annotations

import functools
import logging
import math

import torch
from torch import nn

from mnistlab.attribution import faithfulness, methods, sanity
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.params_eval import AttributionParams
from mnistlab.core.tensors import random_indices, to_pixels

log = logging.getLogger(__name__)


def registry(cfg: AttributionParams) -> dict[str, methods.AttributionFn]:
    """Method name -> ``(model, x, y) -> (B, 1, 28, 28)`` attribution, with ``cfg``'s knobs."""
    occ = cfg.occlusion
    return {
        "saliency": methods.saliency,
        "integrated_gradients": lambda m, x, y: methods.integrated_gradients(
            m, x, y, steps=cfg.ig_steps
        )[0],
        "grad_cam": lambda m, x, y: methods.grad_cam(m, x, y, layer=methods.default_cam_layer(m)),
        "occlusion": functools.partial(
            methods.occlusion_pixels, patch=occ.patch, stride=occ.stride, fill=occ.fill
        ),
    }


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None  # strict JSON has no NaN


def compute(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    name: str,
    cfg: AttributionParams,
    seed: int,
    device: torch.device | str = "cpu",
) -> StageOutputs:
    """Every method on the seeded test images the visualize stage occludes (the same
    for every model), their deletion/insertion curves and the sanity check."""
    from mnistlab.attribution import figures

    idx = random_indices(len(labels), cfg.n_images + 1, seed)[1:]
    x, y = to_pixels(images[idx]).to(device), labels[idx].to(device)
    fns = registry(cfg)
    attrs = {m: fn(model, x, y) for m, fn in fns.items()}
    gen = torch.Generator().manual_seed(seed)
    random_attr = faithfulness.random_order_attribution(x, generator=gen)
    curves = {
        m: faithfulness.deletion_insertion(
            model, x, y, a, n_steps=cfg.deletion_steps, fill=cfg.deletion_fill
        )
        for m, a in {**attrs, figures.RANDOM_KEY: random_attr}.items()
    }
    table = sanity.cascading_randomization(model, x, y, fns, generator=gen)
    passes = sanity.sanity_verdict(table, threshold=cfg.sanity_threshold)
    deletion = {m: float(c.mean_deletion_auc) for m, c in curves.items()}
    best = min(attrs, key=deletion.get)
    metrics = {
        "n_images": len(idx),
        "images": [int(i) for i in idx],
        "deletion_auc": deletion,
        "insertion_auc": {m: float(c.mean_insertion_auc) for m, c in curves.items()},
        "best_method": best,
        "best_deletion_auc_vs_random": deletion[best] / deletion[figures.RANDOM_KEY],
        "sanity_spearman": {
            step: {m: _finite(r) for m, r in row.items()} for step, row in table.items()
        },
        "sanity_passes": passes,
    }
    log.info(
        "%s: deletion AUC %s; sanity check passes %s",
        name,
        {m: round(v, 3) for m, v in deletion.items()},
        passes,
    )
    fractions = curves[best].fractions.tolist()
    rows = [
        {
            "fraction": f,
            **{f"deletion_{m}": float(c.deletion[:, i].mean()) for m, c in curves.items()},
            **{f"insertion_{m}": float(c.insertion[:, i].mean()) for m, c in curves.items()},
        }
        for i, f in enumerate(fractions)
    ]
    steps = list(table)
    sanity_rows = [
        {"step": i, "randomized": s, **{m: _finite(table[s][m]) for m in fns}}
        for i, s in enumerate(steps)
    ]
    figs = {
        "attribution_grid": figures.attribution_grid(
            x.cpu(), y.cpu(), attrs, title=f"{name}: attributions"
        ),
        "deletion_curves": figures.deletion_curves(curves, title=f"{name}: faithfulness"),
        "sanity_check": figures.sanity_check(
            table, threshold=cfg.sanity_threshold, title=f"{name}: model randomisation"
        ),
    }
    arrays = {
        "indices": idx.numpy(),
        "images": x.cpu().numpy(),
        "labels": y.cpu().numpy(),
        **{m: a.detach().float().cpu().numpy() for m, a in attrs.items()},
    }
    return StageOutputs(
        metrics=metrics, rows=rows, figures=figs, arrays=arrays, tables={"sanity": sanity_rows}
    )
