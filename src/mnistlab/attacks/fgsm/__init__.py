"""FGSM (Goodfellow et al. 2015): robust accuracy against eps, one signed-gradient step."""

from __future__ import annotations

from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.pgd import fgsm_attack
from mnistlab.attacks.common.robustness import curve_outputs
from mnistlab.core.outputs import StageOutputs


def compute(inp: AttackInputs) -> StageOutputs:
    """The ``attack@fgsm-<model>`` stage: robust accuracy at every eps of the grid."""
    model, test, params, device = inp.model, inp.test, inp.params, inp.device
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
