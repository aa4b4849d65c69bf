"""The ``attribution@<model>`` stage: which pixels each explanation method says matter,
and whether to trust it.

Methods (:mod:`.methods`, Captum where it has them): saliency, SmoothGrad, Integrated
Gradients from four baselines (black, the blurred input, uniform noise, the training
mean; :mod:`.baselines`), Grad-CAM on the last conv layer, occlusion. Faithfulness
(:mod:`.faithfulness`): deletion and insertion curves against a random order, under
each fill (black, which rewards following the input, and blur, which does not).
Sanity (:mod:`.sanity`): the cascading model-randomisation test of Adebayo et al. 2018.
The *trusted* method of a model passes the sanity check with the lowest deletion AUC
under the blur fill. Figures in :mod:`.figures`.

Any classifier of ``(B, 1, 28, 28)`` pixels works: the layers Grad-CAM and the sanity
check need are found by walking the model (:mod:`mnistlab.core.layers`). A
method that cannot run on a model is left out of every table, curve and figure, and the
metrics say why: ``metrics["not_applicable"] = {method: reason}`` (absent when every
method runs), e.g. ``{"grad_cam": "no Conv2d layer"}`` for an MLP.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping

import torch
from torch import nn

from mnistlab.attribution import baselines, faithfulness, methods, sanity
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.params_eval import TRUSTED_FILL, AttributionParams
from mnistlab.core.tensors import random_indices, to_pixels

log = logging.getLogger(__name__)

RANDOM_KEY = faithfulness.RANDOM_KEY


def registry(
    cfg: AttributionParams, *, mean_image: torch.Tensor, seed: int
) -> dict[str, methods.AttributionFn]:
    """Method name -> ``(model, x, y) -> (B, 1, 28, 28)`` attribution, with ``cfg``'s knobs.

    Every function is deterministic given its inputs (the noise of SmoothGrad and of the
    IG noise baselines is drawn from ``seed`` on every call), so the sanity check's
    randomised models are compared with the same baselines as the trained one.

    Args:
        cfg: the ``attribution`` params.
        mean_image: the training mean, ``(1, 1, 28, 28)`` pixels (:func:`baselines.mean_image`).
        seed: seeds SmoothGrad's noise and the IG noise baselines.
    """
    occ, sg = cfg.occlusion, cfg.smoothgrad

    def ig_from(reference: methods.AttributionFn) -> methods.AttributionFn:
        def fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return methods.integrated_gradients(
                m, x, y, steps=cfg.ig_steps, baseline=reference(m, x, y)
            )[0]

        return fn

    return {
        "saliency": methods.saliency,
        "smoothgrad": functools.partial(
            methods.smoothgrad, samples=sg.samples, noise=sg.noise, seed=seed
        ),
        "integrated_gradients": ig_from(lambda m, x, y: torch.zeros_like(x)),  # black
        "ig_blur": ig_from(lambda m, x, y: baselines.gaussian_blur(x, cfg.blur_sigma)),
        # ig_steps split among the noise baselines: the cost of one IG (the average over
        # baselines, not each path's precision, is what this variant is about)
        "ig_noise": functools.partial(
            methods.integrated_gradients_noise,
            steps=max(1, cfg.ig_steps // cfg.ig_noise_samples),
            samples=cfg.ig_noise_samples,
            seed=seed,
        ),
        "ig_mean": ig_from(lambda m, x, y: mean_image.expand_as(x)),
        "grad_cam": lambda m, x, y: methods.grad_cam(m, x, y, layer=methods.default_cam_layer(m)),
        "occlusion": functools.partial(
            methods.occlusion_pixels, patch=occ.patch, stride=occ.stride, fill=occ.fill
        ),
    }


def ranking(auc: Mapping[str, float]) -> list[str]:
    """Methods by increasing deletion AUC (most faithful first; ties keep ``auc``'s order),
    without the random order."""
    return sorted((m for m in auc if m != RANDOM_KEY), key=auc.__getitem__)


def trusted_method(auc: Mapping[str, float], passes: Mapping[str, bool]) -> str | None:
    """The method that passes the sanity check with the lowest deletion ``auc`` (under the
    unconfounded fill); None when no method passes."""
    return next((m for m in ranking(auc) if passes.get(m, False)), None)


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
    mean_image: torch.Tensor,
) -> StageOutputs:
    """Every method on the seeded test images the visualize stage occludes (the same
    for every model), their deletion/insertion curves under each fill and the sanity check.

    Args:
        images: uint8 test images ``(N, 28, 28)``; labels ``(N,)``.
        mean_image: the training mean ``(1, 1, 28, 28)``, the ``ig_mean`` baseline.
    """
    from mnistlab.attribution import figures

    idx = random_indices(len(labels), cfg.n_images + 1, seed)[1:]
    x, y = to_pixels(images[idx]).to(device), labels[idx].to(device)  # (B, 1, 28, 28), (B,)
    skipped = methods.not_applicable(model)  # method -> why it cannot run on this model
    fns = {
        m: fn
        for m, fn in registry(cfg, mean_image=mean_image, seed=seed).items()
        if m not in skipped
    }
    attrs = {m: fn(model, x, y) for m, fn in fns.items()}
    gen = torch.Generator().manual_seed(seed)
    random_attr = faithfulness.random_order_attribution(x, generator=gen)
    ranked = {**attrs, RANDOM_KEY: random_attr}
    fills = {f: baselines.fill_image(x, f, sigma=cfg.blur_sigma) for f in cfg.deletion_fills}
    curves = {  # fill -> method -> curves
        f: {
            m: faithfulness.deletion_insertion(model, x, y, a, n_steps=cfg.deletion_steps, fill=v)
            for m, a in ranked.items()
        }
        for f, v in fills.items()
    }
    table = sanity.cascading_randomization(model, x, y, fns, generator=gen)
    passes = sanity.sanity_verdict(table, threshold=cfg.sanity_threshold)
    deletion = {f: {m: c.mean_deletion_auc for m, c in cs.items()} for f, cs in curves.items()}
    insertion = {f: {m: c.mean_insertion_auc for m, c in cs.items()} for f, cs in curves.items()}
    order = {f: ranking(d) for f, d in deletion.items()}
    trusted = trusted_method(deletion[TRUSTED_FILL], passes)
    metrics = {
        "n_images": len(idx),
        "images": [int(i) for i in idx],
        "fills": list(cfg.deletion_fills),
        "deletion_auc": deletion,  # fill -> method (and "random") -> mean AUC, lower = better
        "insertion_auc": insertion,  # fill -> method (and "random") -> mean AUC, higher = better
        "ranking": order,  # fill -> methods by deletion AUC, best first
        "best_method": {f: r[0] for f, r in order.items()},  # lowest deletion AUC, per fill
        "best_deletion_auc_vs_random": {
            f: deletion[f][r[0]] / deletion[f][RANDOM_KEY] for f, r in order.items()
        },
        "sanity_spearman": {
            step: {m: _finite(r) for m, r in row.items()} for step, row in table.items()
        },
        "sanity_passes": passes,
        "trusted_fill": TRUSTED_FILL,
        "trusted_method": trusted,  # passes the sanity check, lowest blur deletion AUC
        "trusted_deletion_auc": None if trusted is None else deletion[TRUSTED_FILL][trusted],
        "trusted_deletion_auc_vs_random": (
            None
            if trusted is None
            else deletion[TRUSTED_FILL][trusted] / deletion[TRUSTED_FILL][RANDOM_KEY]
        ),
    }
    if skipped:
        metrics["not_applicable"] = skipped  # method -> why it was not computed
    log.info(
        "%s: deletion AUC %s; sanity check passes %s; trusted %s",
        name,
        {f: {m: round(v, 3) for m, v in d.items()} for f, d in deletion.items()},
        passes,
        trusted,
    )
    fractions = next(iter(curves[TRUSTED_FILL].values())).fractions.tolist()
    rows = [
        {
            "fraction": frac,
            **{
                f"{kind}_{fill}_{m}": float(getattr(c, kind)[:, i].mean())
                for kind in ("deletion", "insertion")
                for fill, cs in curves.items()
                for m, c in cs.items()
            },
        }
        for i, frac in enumerate(fractions)
    ]
    steps = list(table)
    sanity_rows = [
        {"step": i, "randomized": s, **{m: _finite(table[s][m]) for m in fns}}
        for i, s in enumerate(steps)
    ]
    figs = {
        "attribution_grid": figures.attribution_grid(
            x.cpu(), y.cpu(), attrs, title=f"{name}: attributions", passes=passes, trusted=trusted
        ),
        "deletion_curves": figures.deletion_curves(
            curves, passes=passes, title=f"{name}: faithfulness"
        ),
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
