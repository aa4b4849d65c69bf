"""Random noise: accuracy under random corners of the L-inf ball, the attack-free baseline.

Each test image gets ``draws`` uniformly random sign patterns scaled to eps (the corners of
the L-inf ball, where an adversary also ends up); an image counts as robust only if every
draw leaves it correct. The gap to FGSM/PGD at the same eps is what the gradient buys an
adversary. Its noisy images at the largest eps are a transfer set (untargeted).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.pgd import Attack
from mnistlab.attacks.common.robustness import curve_outputs, seeded_test_subset
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.tensors import predict


def random_sign_attack(
    model: torch.nn.Module, *, draws: int, gen: torch.Generator, batch_size: int
) -> Attack:
    """``(x, y, eps) -> x_adv``: per image the first of ``draws`` random corners that the
    model gets wrong, else the last draw."""

    def attack(x: Tensor, y: Tensor, eps: float) -> Tensor:
        out = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(draws):
            signs = torch.randint(0, 2, x.shape, generator=gen).to(x.device, x.dtype) * 2 - 1
            cand = (x + eps * signs).clamp(0, 1)  # (B, 1, 28, 28)
            wrong = predict(model, cand, batch_size=batch_size) != y
            take = ~fooled  # an image already fooled keeps its fooling draw
            out[take] = cand[take]
            fooled |= wrong
        return out

    return attack


def compute(inp: AttackInputs) -> StageOutputs:
    """The ``attack@random_noise-<model>`` stage: accuracy at every eps of the grid."""
    cfg = inp.params.attacks.random_noise
    attack = random_sign_attack(inp.model, draws=cfg.draws, gen=inp.gen, batch_size=cfg.batch_size)
    out = curve_outputs(inp, cfg, name=f"random sign noise ({cfg.draws} draws)", attack=attack)
    _, x, y = seeded_test_subset(inp.test, n=cfg.n_images, seed=inp.params.seed, device=inp.device)
    noisy = attack(x, y, max(cfg.eps))
    out.arrays.update(
        {
            "transfer.random_noise.images": noisy.cpu().numpy(),
            "transfer.random_noise.targets": y.cpu().numpy(),
            "transfer.random_noise.mode": "untargeted",
        }
    )
    return out
