"""PGD (Madry et al. 2018): robust accuracy against eps, ``steps`` projected steps."""

from __future__ import annotations

from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.pgd import pgd_attack
from mnistlab.attacks.common.robustness import curve_outputs
from mnistlab.core.outputs import StageOutputs


def compute(inp: AttackInputs) -> StageOutputs:
    """The ``attack@pgd-<model>`` stage: robust accuracy at every eps of the grid."""
    cfg = inp.params.attacks.pgd
    attack = pgd_attack(
        inp.model,
        steps=cfg.steps,
        step_ratio=cfg.step_ratio,
        random_start=cfg.random_start,
        early_stop=cfg.early_stop,
        gen=inp.gen,
        batch_size=cfg.batch_size,
    )
    return curve_outputs(inp, cfg, name="PGD", attack=attack)
