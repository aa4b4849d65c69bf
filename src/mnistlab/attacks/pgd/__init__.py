"""PGD (Madry et al. 2018): robust accuracy against eps, ``steps`` projected steps."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mnistlab.attacks.common.pgd import pgd_attack
from mnistlab.attacks.common.robustness import curve_outputs
from mnistlab.core.config import Params
from mnistlab.core.outputs import StageOutputs


def compute(
    model: nn.Module,
    test: tuple[Tensor, Tensor],
    *,
    params: Params,
    gen: torch.Generator,
    device: torch.device | str,
) -> StageOutputs:
    """The ``attack@pgd-<model>`` stage: robust accuracy at every eps of the grid."""
    cfg = params.attacks.pgd
    attack = pgd_attack(
        model,
        steps=cfg.steps,
        step_ratio=cfg.step_ratio,
        random_start=cfg.random_start,
        early_stop=cfg.early_stop,
        gen=gen,
        batch_size=cfg.batch_size,
    )
    return curve_outputs(
        model,
        test,
        name="PGD",
        attack=attack,
        eps=cfg.eps,
        n_images=cfg.n_images,
        batch_size=cfg.batch_size,
        seed=params.seed,
        device=device,
    )
