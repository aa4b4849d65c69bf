"""FGSM (Goodfellow et al. 2015): robust accuracy against eps, one signed-gradient step."""

from __future__ import annotations

from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.pgd import fgsm_attack
from mnistlab.attacks.common.robustness import curve_outputs
from mnistlab.core.outputs import StageOutputs


def compute(inp: AttackInputs) -> StageOutputs:
    """The ``attack@fgsm-<model>`` stage: robust accuracy at every eps of the grid."""
    cfg = inp.params.attacks.fgsm
    attack = fgsm_attack(inp.model, batch_size=cfg.batch_size)
    return curve_outputs(inp, cfg, name="FGSM", attack=attack)
