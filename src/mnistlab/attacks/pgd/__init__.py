"""PGD (Madry et al. 2018): robust accuracy against eps, ``steps`` projected steps."""

from __future__ import annotations

from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.pgd import pgd_attack
from mnistlab.attacks.common.robustness import curve_outputs
from mnistlab.core.outputs import StageOutputs


def compute(inp: AttackInputs) -> StageOutputs:
    """The ``attack@pgd-<model>`` stage: robust accuracy at every eps of the grid."""
    model, test, params, gen, device = inp.model, inp.test, inp.params, inp.gen, inp.device
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
