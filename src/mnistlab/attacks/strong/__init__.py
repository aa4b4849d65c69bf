"""The strong evaluation (``attack@strong-<model>``): PGD-40, then APGD-CE and targeted
APGD-DLR (Croce & Hein 2020) on what PGD left standing, then the query-only Square attack
(Andriushchenko et al. 2020) on what the gradient attacks left; an image is robust only
if it survives every attack and restart. Plus the smallest eps that flips each image
(by the gradient members: Square's queries at every bisection step would cost more than
the rest of the stage).

The attacks themselves are in :mod:`.apgd` (one APGD run in :mod:`.autopgd`, the ensemble
in :mod:`.ensemble`, the minimal-eps search in :mod:`.min_eps`, Square in :mod:`.square`);
figures in :mod:`.figures`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.pgd import pgd
from mnistlab.attacks.common.robustness import seeded_test_subset
from mnistlab.attacks.strong.apgd import minimal_eps, strong_attack, strong_attack_fn
from mnistlab.attacks.strong.square import square
from mnistlab.core.attack_params.strong import StrongParams
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.tensors import batches, predict

log = logging.getLogger(__name__)


def _ensemble_settings(cfg: StrongParams, gen: torch.Generator) -> dict[str, Any]:
    """The APGD ensemble's keyword arguments from the ``attacks.strong`` params."""
    return dict(
        n_iter=cfg.n_iter,
        n_restarts=cfg.n_restarts,
        n_targets=cfg.n_targets,
        batch_size=cfg.batch_size,
        generator=gen,
    )


def worst_case(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, cfg: StrongParams, gen: torch.Generator
) -> dict[str, Tensor]:
    """Per-image robustness under PGD-40 alone and under the whole ensemble at ``eps``.

    PGD runs first on every image; APGD-CE (with restarts), targeted APGD-DLR and then
    Square (``cfg.square_queries`` queries, forward passes only) run only on the images
    still correct, so the ensemble is never weaker than PGD on any image, and costs
    little where PGD already broke everything.

    Returns:
        ``{"clean", "pgd", "apgd_ce", "apgd", "strong"}``: bool ``(N,)``, each the images
        still classified correctly after that attack and every one before it
        (``"apgd"``: after both APGD members; ``"strong"``: after Square too), and
        ``"square_queries"``: long ``(N,)``, the queries Square spent per image.
    """
    clean = predict(model, x) == y
    queries = torch.zeros(len(y), dtype=torch.long, device=y.device)
    if eps == 0:
        return {
            "clean": clean,
            "pgd": clean,
            "apgd_ce": clean,
            "apgd": clean,
            "strong": clean,
            "square_queries": queries,
        }
    x_pgd = pgd(
        model,
        x,
        y,
        eps=eps,
        steps=cfg.pgd_steps,
        step_size=cfg.pgd_step_ratio * eps,
        random_start=True,
        early_stop=True,
        gen=gen,
        batch_size=cfg.batch_size,
    )
    pgd_ok = clean & (predict(model, x_pgd) == y)
    res = strong_attack(model, x[pgd_ok], y[pgd_ok], eps=eps, **_ensemble_settings(cfg, gen))
    ce, apgd = torch.zeros_like(clean), torch.zeros_like(clean)
    ce[pgd_ok], apgd[pgd_ok] = res.robust_by_attack["apgd_ce"], res.robust
    strong = apgd.clone()
    left = apgd.nonzero().squeeze(1)
    if cfg.square_queries and len(left):
        # One model call per query on a chunk of cfg.batch_size images (the throughput
        # the forward pass is measured best at); Square's draws do not depend on the chunk.
        for sl in batches(len(left), cfg.batch_size):
            i = left[sl]
            adv, queries[i] = square(
                model,
                x[i],
                y[i],
                eps=eps,
                n_queries=cfg.square_queries,
                p_init=cfg.square_p_init,
                generator=gen,
            )
            strong[i] = predict(model, adv) == y[i]
    return {
        "clean": clean,
        "pgd": pgd_ok,
        "apgd_ce": ce,
        "apgd": apgd,
        "strong": strong,
        "square_queries": queries,
    }


def quartiles(values: np.ndarray) -> dict[str, float | None]:
    """Median and quartiles of per-image eps (``inf`` = never flipped; reported as null)."""
    q = np.quantile(values, [0.25, 0.5, 0.75]) if len(values) else [np.inf] * 3
    return {
        name: (float(v) if np.isfinite(v) else None)
        for name, v in zip(("q1", "median", "q3"), q, strict=True)
    }


def compute(inp: AttackInputs) -> StageOutputs:
    """The ``attack@strong-<model>`` stage."""
    model, test, params, gen, device = inp.model, inp.test, inp.params, inp.gen, inp.device
    from mnistlab.attacks.strong import figures

    cfg = params.attacks.strong
    idx, x, y = seeded_test_subset(test, n=cfg.n_images, seed=params.seed, device=device)
    rows, masks = [], {}
    for eps in cfg.eps:
        ok = worst_case(model, x, y, eps=eps, cfg=cfg, gen=gen)
        masks[f"robust_{eps:g}"] = ok["strong"].cpu().numpy()
        queries = ok.pop("square_queries")
        row = {
            "eps": float(eps),
            **{f"{k}_accuracy": float(v.float().mean()) for k, v in ok.items() if k != "clean"},
        }
        row["gap"] = row["pgd_accuracy"] - row["strong_accuracy"]
        attacked = queries > 0
        row["square_broken"] = int((ok["apgd"] & ~ok["strong"]).sum())
        spent = queries[attacked].float()
        row["square_mean_queries"] = float(spent.mean()) if len(spent) else 0.0
        rows.append(row)
        log.info(
            "eps %g: PGD-%d %.4f, APGD %.4f, + Square-%d %.4f",
            eps,
            cfg.pgd_steps,
            row["pgd_accuracy"],
            row["apgd_accuracy"],
            cfg.square_queries,
            row["strong_accuracy"],
        )
    m = cfg.min_eps
    attack = strong_attack_fn(model, **_ensemble_settings(cfg, gen))
    eps_min = (
        minimal_eps(model, x[: m.n_images], y[: m.n_images], attack=attack, hi=m.hi, tol=m.tol)
        .cpu()
        .numpy()
    )
    metrics = {
        "n_images": len(y),
        "pgd_steps": cfg.pgd_steps,
        "clean_accuracy": float((predict(model, x) == y).float().mean()),
        "robust_accuracy": {
            "pgd": {f"{r['eps']:g}": r["pgd_accuracy"] for r in rows},
            "apgd_ce": {f"{r['eps']:g}": r["apgd_ce_accuracy"] for r in rows},
            "apgd": {f"{r['eps']:g}": r["apgd_accuracy"] for r in rows},
            "strong": {f"{r['eps']:g}": r["strong_accuracy"] for r in rows},
            "gap": {f"{r['eps']:g}": r["gap"] for r in rows},
        },
        "square": {
            "queries": cfg.square_queries,
            "broken": {f"{r['eps']:g}": r["square_broken"] for r in rows},
            "mean_queries": {f"{r['eps']:g}": r["square_mean_queries"] for r in rows},
        },
        "min_eps": {
            "n_images": len(eps_min),
            "hi": m.hi,
            "tol": m.tol,
            "never_flipped": int(np.isinf(eps_min).sum()),
            **quartiles(eps_min),
        },
    }
    figs = {"robust_accuracy": figures.robust_accuracy(rows, pgd_steps=cfg.pgd_steps)}
    arrays = {"indices": idx.numpy(), "eps": np.asarray(cfg.eps), "min_eps": eps_min, **masks}
    return StageOutputs(metrics=metrics, rows=rows, figures=figs, arrays=arrays)
