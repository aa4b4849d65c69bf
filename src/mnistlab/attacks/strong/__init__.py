"""The strong evaluation (``attack@strong-<model>``): PGD-40, then APGD-CE and targeted
APGD-DLR (Croce & Hein 2020) on what PGD left standing; an image is robust only if it
survives every attack and restart. Plus the smallest eps that flips each image.

The attacks themselves are in :mod:`.apgd` (one APGD run in :mod:`.autopgd`, the ensemble
in :mod:`.ensemble`, the minimal-eps search in :mod:`.min_eps`); figures in :mod:`.figures`.
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
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.params_attacks import StrongParams
from mnistlab.core.tensors import predict

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

    PGD runs first on every image; APGD-CE (with restarts) and then targeted APGD-DLR
    run only on the images still correct, so the ensemble is never weaker than PGD on
    any image, and costs little where PGD already broke everything.

    Returns:
        ``{"clean", "pgd", "apgd_ce", "strong"}``: bool ``(N,)``, each the images still
        classified correctly after that attack and every one before it.
    """
    clean = predict(model, x) == y
    if eps == 0:
        return {"clean": clean, "pgd": clean, "apgd_ce": clean, "strong": clean}
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
    ce, strong = torch.zeros_like(clean), torch.zeros_like(clean)
    ce[pgd_ok], strong[pgd_ok] = res.robust_by_attack["apgd_ce"], res.robust
    return {"clean": clean, "pgd": pgd_ok, "apgd_ce": ce, "strong": strong}


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
        row = {
            "eps": float(eps),
            **{f"{k}_accuracy": float(v.float().mean()) for k, v in ok.items() if k != "clean"},
        }
        row["gap"] = row["pgd_accuracy"] - row["strong_accuracy"]
        rows.append(row)
        log.info(
            "eps %g: PGD-%d %.4f, ensemble %.4f",
            eps,
            cfg.pgd_steps,
            row["pgd_accuracy"],
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
            "strong": {f"{r['eps']:g}": r["strong_accuracy"] for r in rows},
            "gap": {f"{r['eps']:g}": r["gap"] for r in rows},
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
