"""FGSM (Goodfellow et al. 2015): robust accuracy against eps, one signed-gradient step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mnistlab.attacks.common.pgd import fgsm_attack
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
    """The ``attack@fgsm-<model>`` stage: robust accuracy at every eps of the grid."""
    cfg = params.attacks.fgsm
    return curve_outputs(
        model,
        test,
        name="FGSM",
        attack=fgsm_attack(model, batch_size=cfg.batch_size),
        eps=cfg.eps,
        n_images=cfg.n_images,
        batch_size=cfg.batch_size,
        seed=params.seed,
        device=device,
    )
