"""Adversarial training helpers: PGD training (Madry et al. 2018) and FGSM with a
random start (Wong, Rice and Kolter 2020, "Fast is better than free").

Pixels are in [0, 1] shaped ``(B, 1, 28, 28)``; randomness comes only from a
``torch.Generator`` argument; gradients are taken with respect to the input only
(``torch.autograd.grad``), so crafting never touches the parameters' ``.grad``.

BatchNorm while crafting: by default (``bn="running"``) the examples are crafted in
eval mode, i.e. with BatchNorm's running statistics. Reasons: each image's attack
then does not depend on the rest of the batch; the ``steps`` crafting forwards do
not push intermediate, half-attacked batches into the running statistics; and the
attack targets the function that is evaluated (and attacked at test time). The cost
is that early in training the running statistics lag behind the batch statistics
the training forward uses. ``bn="batch"`` instead uses the batch statistics, as the
training forward does (Wong et al.'s code keeps train mode while crafting), and
restores the running statistics afterwards. Dropout, if any, is off either way. The
study's ``cnn_adv`` (no BatchNorm, no dropout) is unaffected by the choice. The
model's mode and ``requires_grad`` flags are restored on exit in both cases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnistlab.core.tensors import (
    as_eps,
    batches,
    frozen,
    per_image,
    predict,
    project,
    uniform_start,
)

Method = Literal["pgd", "fgsm_rs"]
BNStats = Literal["running", "batch"]


def eps_at(step: int, *, steps_per_epoch: int, eps: float, ramp_epochs: float) -> float:
    """Training radius at optimiser step ``step`` (0-based): a linear ramp from 0 to
    ``eps`` over the first ``ramp_epochs`` epochs, then ``eps``.

    ``ramp_epochs <= 0`` gives ``eps`` from the first step.
    """
    ramp = ramp_epochs * steps_per_epoch
    if ramp <= 0:
        return float(eps)
    return float(eps) * min(1.0, step / ramp)


@contextlib.contextmanager
def _crafting(model: nn.Module, bn: BNStats) -> Iterator[None]:
    """Eval mode and frozen parameters; with ``bn="batch"`` BatchNorm layers use batch
    statistics and get their running statistics back on exit."""
    with frozen(model):
        if bn == "running":
            yield
            return
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms]
        for m in norms:
            m.train()
        try:
            yield
        finally:
            for m, buf in zip(norms, saved, strict=True):
                for k, v in buf.items():
                    getattr(m, k).copy_(v)
                m.eval()  # frozen() restores the model's own mode after this


def perturb(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    method: Method = "pgd",
    steps: int = 5,
    step_ratio: float | None = None,
    generator: torch.Generator,
    bn: BNStats = "running",
) -> Tensor:
    """Training-time L-inf adversarial examples on the cross-entropy.

    Both methods start from a uniform point of the eps-ball (clamped to [0, 1]).
    ``"pgd"``: ``steps`` signed-gradient steps of ``step_ratio * eps``, each
    projected onto the ball and [0, 1] (Madry et al.; default ratio ``2.5 / steps``).
    ``"fgsm_rs"``: one such step (``steps`` is ignored; default ratio 1.25, Wong et
    al.'s ``alpha = 1.25 * eps``).

    Args:
        x: ``(B, 1, 28, 28)`` pixels in [0, 1]; y: ``(B,)`` labels.
        eps: L-inf radius (0 returns a copy of ``x``).
        generator: draws the random start.
        bn: BatchNorm statistics while crafting, ``"running"`` (eval mode, default)
            or ``"batch"``; see the module docstring.

    Returns:
        ``(B, 1, 28, 28)`` detached, in [0, 1] and within ``eps`` of ``x``.
    """
    if method not in ("pgd", "fgsm_rs"):
        raise ValueError(f"method must be 'pgd' or 'fgsm_rs', got {method!r}")
    if bn not in ("running", "batch"):
        raise ValueError(f"bn must be 'running' or 'batch', got {bn!r}")
    x = x.detach()
    if eps == 0 or not len(x):
        return x.clone()
    n_steps = steps if method == "pgd" else 1
    if step_ratio is None:
        step_ratio = 2.5 / max(n_steps, 1) if method == "pgd" else 1.25
    e = as_eps(eps, len(x), x.device)
    eps4 = per_image(e, x)  # (B, 1, 1, 1)
    adv = uniform_start(x, e, generator)
    with _crafting(model, bn):
        for _ in range(n_steps):
            adv.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(adv), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, adv)
            with torch.no_grad():
                adv = project(adv.detach() + step_ratio * eps4 * grad.sign(), x, eps4)
    return adv.detach()


def pgd_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int = 10,
    step_ratio: float = 0.25,
    generator: torch.Generator,
    batch_size: int = 500,
) -> float:
    """Accuracy under a quick PGD (random start, eval mode), e.g. on a held-out set
    after each epoch: a collapse while clean accuracy holds signals catastrophic
    overfitting of FGSM training (Wong et al. 2020).

    Args:
        x: ``(N, 1, 28, 28)`` pixels in [0, 1]; y: ``(N,)`` labels.
        steps, step_ratio: PGD steps of ``step_ratio * eps``.
    """
    if not len(x):
        return 0.0
    correct = 0
    for s in batches(len(x), batch_size):
        adv = perturb(
            model,
            x[s],
            y[s],
            eps=eps,
            method="pgd",
            steps=steps,
            step_ratio=step_ratio,
            generator=generator,
            bn="running",
        )
        correct += int((predict(model, adv, batch_size=batch_size) == y[s]).sum())
    return correct / len(x)
