"""What every attack form's ``compute`` is given: one object, so each form reads only
the fields it needs and the forms' signatures cannot drift apart."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from mnistlab.core.config import Params


@dataclasses.dataclass(frozen=True)
class AttackInputs:
    """The attacked model, the MNIST test split and the run's params and randomness.

    Attributes:
        model: the trained model, in eval mode on ``device``.
        test: uint8 test images ``(N, 28, 28)`` and their labels ``(N,)``.
        params: the validated params (each form reads ``params.attacks.<form>``).
        gen: the seeded generator every random draw of the attack comes from.
        device: where the attack computes.
        train: the uint8 training split ``(60000, 28, 28)`` and its labels, given only to
            a form whose module sets ``USES_TRAIN = True`` (class_model: its seeds and
            judges need real digits), so the other forms never pay for reading it.
    """

    model: nn.Module
    test: tuple[Tensor, Tensor]
    params: Params
    gen: torch.Generator
    device: torch.device | str
    train: tuple[Tensor, Tensor] | None = None
