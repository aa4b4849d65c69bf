"""Robust accuracy against eps under FGSM or PGD: what the ``fgsm`` and ``pgd`` forms share."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from mnistlab.attacks.common import figures
from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.pgd import Attack, robustness_curve
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.tensors import random_indices, to_pixels


class CurveParams(Protocol):
    """What a robust-accuracy curve reads of its form's section (``attacks.fgsm``,
    ``attacks.pgd``, or a new form's): each form's own schema validates it."""

    n_images: int
    batch_size: int
    eps: list[float]


def seeded_test_subset(
    test: tuple[Tensor, Tensor], *, n: int, seed: int, device: torch.device | str
) -> tuple[Tensor, Tensor, Tensor]:
    """The first ``n`` test images of one seeded permutation: indices, pixels, labels."""
    images, labels = test
    idx = random_indices(len(labels), n, seed)
    return idx, to_pixels(images[idx]).to(device), labels[idx].to(device)


def curve_outputs(
    inp: AttackInputs, cfg: CurveParams, *, name: str, attack: Attack
) -> StageOutputs:
    """Robust accuracy of the model under ``attack`` at every eps, as stage outputs.

    Args:
        inp: the stage's model, test split, params (``seed``) and device.
        cfg: the form's params: ``eps`` grid, ``n_images``, ``batch_size``.
        name: the attack's name in the figure.
        attack: ``(x, y, eps) -> x_adv``.
    """
    eps = cfg.eps
    idx, x, y = seeded_test_subset(
        inp.test, n=cfg.n_images, seed=inp.params.seed, device=inp.device
    )
    curve = robustness_curve(
        inp.model, x, y, eps_grid=eps, attack=attack, batch_size=cfg.batch_size
    )
    metrics = {
        "n_images": len(y),
        "robust_accuracy": {f"{c['eps']:g}": c["robust_accuracy"] for c in curve},
        "mean_l2_success": {f"{c['eps']:g}": c["mean_l2_success"] for c in curve},
    }
    rows = [
        {
            "eps": c["eps"],
            "robust_accuracy": c["robust_accuracy"],
            "mean_l2_success": c["mean_l2_success"],
        }
        for c in curve
    ]
    fig = figures.robustness({name: curve}, f"{name} robustness")
    return StageOutputs(
        metrics=metrics,
        rows=rows,
        figures={"robustness": fig},
        arrays={"indices": idx.numpy(), "eps": np.asarray(eps)},
    )
