"""The strong evaluation (``attack@strong-<model>``): PGD-40, then APGD-CE and targeted
APGD-DLR (Croce & Hein 2020) on what PGD left standing, then the query-only Square attack
(Andriushchenko et al. 2020) on what the gradient attacks left; an image is robust only
if it survives every attack and restart. Plus the smallest eps that flips each image
(by the gradient members: Square's queries at every bisection step would cost more than
the rest of the stage).

The attacks themselves are in :mod:`.apgd` (one APGD run in :mod:`mnistlab.core.autopgd`,
the ensemble in :mod:`.ensemble`, the minimal-eps search in :mod:`.min_eps`, Square in
:mod:`.square`); figures in :mod:`.figures`. AutoAttack's standard budget continues the
ensemble where ``attacks.strong.standard`` says (:func:`worst_case`).
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


def _square_on(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    mask: Tensor,
    *,
    eps: float,
    n_queries: int,
    cfg: StrongParams,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Square with ``n_queries`` on the images in ``mask`` ``(N,)``: what it leaves robust
    ``(N,)`` bool and the queries it spent per image ``(N,)`` long."""
    survived = mask.clone()
    queries = torch.zeros(len(y), dtype=torch.long, device=y.device)
    left = mask.nonzero().squeeze(1)
    if not n_queries or not len(left):
        return survived, queries
    # One model call per query on a chunk of cfg.batch_size images (the throughput the
    # forward pass is measured best at); Square's draws do not depend on the chunk.
    for sl in batches(len(left), cfg.batch_size):
        i = left[sl]
        adv, queries[i] = square(
            model, x[i], y[i], eps=eps, n_queries=n_queries, p_init=cfg.square_p_init, generator=gen
        )
        survived[i] = predict(model, adv) == y[i]
    return survived, queries


def worst_case(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, cfg: StrongParams, gen: torch.Generator
) -> dict[str, Tensor]:
    """Per-image robustness under PGD-40 alone, the whole ensemble and, where
    ``cfg.standard`` runs at ``eps``, AutoAttack's standard budget.

    PGD runs first on every image; APGD-CE (with restarts), targeted APGD-DLR and then
    Square (``cfg.square_queries`` queries, forward passes only) run only on the images
    still correct, so the ensemble is never weaker than PGD on any image, and costs
    little where PGD already broke everything. The standard budget continues on what
    the ensemble left: targeted APGD on the target classes ``cfg.n_targets + 1`` to
    ``cfg.standard.n_targets`` (ranked by the clean logits, as the first ones were), then
    a fresh Square run of ``cfg.standard.square_queries``. Every member of standard
    AutoAttack (APGD-CE with one restart, APGD-T on 9 targets, Square with 5,000 queries)
    has thus run on each image at its budget or more (FAB-T aside: see README), and it
    costs nothing where the cheaper budget already broke every image.

    Returns:
        ``{"clean", "pgd", "apgd_ce", "apgd", "strong"}``: bool ``(N,)``, each the images
        still classified correctly after that attack and every one before it
        (``"apgd"``: after both APGD members; ``"strong"``: after Square too);
        ``"standard"`` (only where ``eps`` is in ``cfg.standard.eps``): after the
        standard budget's further APGD-T and Square, with ``"standard_apgd"`` after its
        APGD-T alone; and ``"square_queries"``: long ``(N,)``, the queries the cheaper
        Square spent per image.
    """
    clean = predict(model, x) == y
    if eps == 0:
        out = dict.fromkeys(("clean", "pgd", "apgd_ce", "apgd", "strong"), clean)
        if eps in cfg.standard.eps:
            out["standard_apgd"] = out["standard"] = clean
        return {**out, "square_queries": torch.zeros(len(y), dtype=torch.long, device=y.device)}
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
    strong, queries = _square_on(
        model, x, y, apgd, eps=eps, n_queries=cfg.square_queries, cfg=cfg, gen=gen
    )
    out = {"clean": clean, "pgd": pgd_ok, "apgd_ce": ce, "apgd": apgd, "strong": strong}
    if eps in cfg.standard.eps:
        std = cfg.standard
        std_apgd = strong.clone()
        if std.n_targets > cfg.n_targets and strong.any():
            more = strong_attack(
                model,
                x[strong],
                y[strong],
                eps=eps,
                **{**_ensemble_settings(cfg, gen), "n_restarts": 0, "n_targets": std.n_targets},
                first_target=cfg.n_targets,
            )
            std_apgd[strong] = more.robust
        out["standard_apgd"] = std_apgd
        out["standard"], _ = _square_on(
            model, x, y, std_apgd, eps=eps, n_queries=std.square_queries, cfg=cfg, gen=gen
        )
    return {**out, "square_queries": queries}


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
        # the standard budget's own columns, empty at the eps it does not run at
        std = "standard" in ok
        row["standard_accuracy"] = row.pop("standard_accuracy", None)
        row.pop("standard_apgd_accuracy", None)
        row["standard_apgd_t_broken"] = (
            int((ok["strong"] & ~ok["standard_apgd"]).sum()) if std else None
        )
        row["standard_square_broken"] = (
            int((ok["standard_apgd"] & ~ok["standard"]).sum()) if std else None
        )
        if std:
            masks[f"robust_standard_{eps:g}"] = ok["standard"].cpu().numpy()
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
        if std:
            log.info(
                "eps %g: standard budget (APGD-T x%d, Square-%d) %.4f",
                eps,
                cfg.standard.n_targets,
                cfg.standard.square_queries,
                row["standard_accuracy"],
            )
    m = cfg.min_eps
    attack = strong_attack_fn(model, **_ensemble_settings(cfg, gen))
    eps_min = (
        minimal_eps(model, x[: m.n_images], y[: m.n_images], attack=attack, hi=m.hi, tol=m.tol)
        .cpu()
        .numpy()
    )
    std_rows = [r for r in rows if r["standard_accuracy"] is not None]
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
        "standard": {
            "n_targets": cfg.standard.n_targets,
            "square_queries": cfg.standard.square_queries,
            "robust_accuracy": {f"{r['eps']:g}": r["standard_accuracy"] for r in std_rows},
            # how much the cheaper budget overstates robustness
            "gap": {
                f"{r['eps']:g}": r["strong_accuracy"] - r["standard_accuracy"] for r in std_rows
            },
            "apgd_t_broken": {f"{r['eps']:g}": r["standard_apgd_t_broken"] for r in std_rows},
            "square_broken": {f"{r['eps']:g}": r["standard_square_broken"] for r in std_rows},
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
