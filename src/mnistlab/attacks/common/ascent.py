"""What the optimisation attacks share: noise draws, losses and projected Adam ascent.

Every attack takes raw pixels in [0, 1] shaped ``(B, 1, 28, 28)`` and keeps its
outputs in [0, 1]. All the images of one problem (every class, every image/target
pair) go through the model together, one forward/backward per iteration. The model
is used in eval mode with its parameters frozen for the duration of a call
(gradients are taken with respect to the input only). Randomness comes only from a
``torch.Generator`` argument.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rand(
    shape: torch.Size | tuple[int, ...],
    gen: torch.Generator,
    device: torch.device,
    normal: bool = False,
) -> Tensor:
    """Uniform [0, 1) (or standard normal) noise drawn on ``gen``'s device, moved to ``device``."""
    draw = torch.randn if normal else torch.rand
    return draw(shape, generator=gen, device=gen.device).to(device)


def sq_norm(t: Tensor) -> Tensor:
    """Squared L2 norm per sample: ``(B, ...)`` -> ``(B,)``."""
    return t.flatten(1).pow(2).sum(1)


def loss_grad(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Logits ``(B, 10)`` at ``x`` and the gradient of the summed cross-entropy w.r.t. ``x``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
    return logits.detach(), grad


Objective = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]


def target_objective(
    model: nn.Module,
    target: Tensor,
    penalty: Callable[[Tensor], Tensor],
    inputs: Callable[[Tensor], Tensor] | None = None,
    gain: str = "logit",
) -> Objective:
    """``v -> (gain - penalty(v), logit_target, logits)`` for the images ``inputs(v)``.

    ``gain`` is the target's pre-softmax logit (``"logit"``) or its log-softmax
    (``"ce"``, i.e. minus the cross-entropy to the target).
    """
    rows = torch.arange(len(target), device=target.device)

    def objective(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = model(v if inputs is None else inputs(v))  # (B, 10)
        logit = logits[rows, target]  # (B,)
        g = logit if gain == "logit" else logits.log_softmax(1)[rows, target]
        return g - penalty(v), logit, logits

    return objective


def adam_ascent(
    var: Tensor, objective: Objective, steps: int, lr: float, project: Callable[[Tensor], None]
) -> tuple[Tensor, Tensor]:
    """Maximise ``objective(var)[0].sum()`` with Adam on ``var``, projecting after each step.

    Adam makes ``lr`` a per-pixel step size whatever the gradient's scale, so one
    setting works across models; samples in the batch stay independent (eval mode,
    elementwise moments). One forward/backward per step, one forward at the end.

    Args:
        var: the tensor optimised in place, ``(B, ...)``.
        objective: ``var -> (value (B,), target logit (B,), logits (B, 10))``.
        project: in-place projection of ``var`` onto the feasible set (under no_grad).

    Returns:
        The target logit per iteration ``(steps + 1, B)`` (before each step, then at
        the end), and the logits ``(B, 10)`` at the final ``var``.
    """
    var.requires_grad_(True)
    opt = torch.optim.Adam([var], lr=lr, maximize=True)
    history = []
    for _ in range(steps):
        with torch.enable_grad():
            value, logit, _ = objective(var)
            (var.grad,) = torch.autograd.grad(value.sum(), var)
        history.append(logit.detach())
        opt.step()
        with torch.no_grad():
            project(var)
    var.requires_grad_(False)
    var.grad = None
    with torch.no_grad():
        _, logit, logits = objective(var)
    history.append(logit)
    return torch.stack(history), logits
