"""FGSM and PGD (L-inf, untargeted) and the robust-accuracy curve over an eps grid.

Shared by the ``fgsm`` and ``pgd`` forms, the strong ensemble (PGD is one of its
members) and the ``transfer`` stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mnistlab.attacks.common.ascent import loss_grad, rand
from mnistlab.core.tensors import batches, frozen, predict, project

Attack = Callable[[Tensor, Tensor, float], Tensor]  # (x, y, eps) -> x_adv


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, batch_size: int = 500) -> Tensor:
    """Untargeted L-inf FGSM: ``clamp(x + eps * sign(grad_x CE), 0, 1)``."""
    if eps == 0:
        return x.clone()
    out = torch.empty_like(x)
    with frozen(model):
        for s in batches(len(x), batch_size):
            _, grad = loss_grad(model, x[s], y[s])
            out[s] = (x[s] + eps * grad.sign()).clamp_(0, 1)
    return out


def _pgd_start(x: Tensor, eps: float, random_start: bool, gen: torch.Generator | None) -> Tensor:
    if not random_start:
        return x.clone()
    if gen is None:
        raise ValueError("PGD with random_start needs a generator")
    delta = (2 * rand(x.shape, gen, x.device) - 1) * eps  # uniform in [-eps, eps]
    return (x + delta).clamp_(0, 1)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    random_start: bool,
    early_stop: bool,
    gen: torch.Generator | None,
    batch_size: int = 500,
) -> Tensor:
    """Untargeted L-inf PGD on the cross-entropy, projected onto the eps-ball and [0, 1].

    With ``early_stop`` an image stops moving at the first iterate the model
    misclassifies (that iterate is returned), and later iterations run on the
    still-correct images only. An image never misclassified along the way follows
    exactly the textbook trajectory, so early stopping can only add successes.

    Args:
        x: ``(N, 1, 28, 28)`` pixels in [0, 1]; ``y``: ``(N,)`` true labels.
        eps: L-inf radius; 0 returns ``x`` unchanged.
        steps: iterations; ``step_size``: L-inf size of each signed-gradient step.
        random_start: start from a uniform point of the eps-ball (drawn from ``gen``
            for all ``N`` images at once, so it does not depend on ``batch_size``).
    """
    if eps == 0:
        return x.clone()
    adv = _pgd_start(x, eps, random_start, gen)
    with frozen(model):
        for s in batches(len(x), batch_size):
            active = torch.arange(s.start, s.stop, device=x.device)
            for _ in range(steps):
                logits, grad = loss_grad(model, adv[active], y[active])
                if early_stop:
                    still = logits.argmax(1) == y[active]
                    active, grad = active[still], grad[still]
                    if not len(active):
                        break
                adv[active] = project(adv[active] + step_size * grad.sign(), x[active], eps)
    return adv


def pgd_textbook(model: nn.Module, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
    """Plain L-inf PGD: ``steps`` projected signed-gradient steps on every image (the
    baseline :func:`pgd` with early stopping is measured and tested against)."""
    return pgd(model, x, y, early_stop=False, **kwargs)


def fgsm_attack(model: nn.Module, *, batch_size: int = 500) -> Attack:
    """FGSM as an ``(x, y, eps) -> x_adv`` callable for :func:`robustness_curve`."""
    return lambda x, y, eps: fgsm(model, x, y, eps=eps, batch_size=batch_size)


def pgd_attack(model: nn.Module, *, step_ratio: float, **settings: Any) -> Attack:
    """PGD with ``step_size = step_ratio * eps`` as an ``(x, y, eps) -> x_adv`` callable.

    Args:
        step_ratio: each call's step size as a fraction of its ``eps``.
        settings: :func:`pgd`'s other keyword arguments (``steps``, ``random_start``,
            ``early_stop``, ``gen``, ``batch_size``), the same for every call.
    """
    return lambda x, y, eps: pgd(model, x, y, eps=eps, step_size=step_ratio * eps, **settings)


def robustness_curve(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps_grid: Sequence[float],
    attack: Attack,
    batch_size: int,
) -> list[dict]:
    """Robust accuracy of ``model`` under ``attack`` at every eps.

    Args:
        x: ``(N, 1, 28, 28)`` pixels in [0, 1]; ``y``: ``(N,)`` labels.
        attack: ``(x, y, eps) -> x_adv``, called on chunks of ``batch_size`` images.

    Returns:
        One row per eps: ``eps``, ``robust_accuracy`` (fraction of all ``N`` images
        still correct), ``mean_l2_success`` (mean L2 distance of the adversarial
        examples the model gets wrong, 0.0 when none), ``mean_linf_success`` and
        ``seconds`` (attack and scoring time).
    """
    rows = []
    for eps in eps_grid:
        start = time.perf_counter()
        correct, l2, linf = 0, [], []
        for s in batches(len(x), batch_size):
            adv = attack(x[s], y[s], eps)
            wrong = predict(model, adv, batch_size=batch_size) != y[s]
            correct += int((~wrong).sum())
            diff = (adv - x[s])[wrong].flatten(1)
            l2.append(diff.norm(dim=1))
            linf.append(diff.abs().amax(1) if len(diff) else diff.sum(1))
        l2_all, linf_all = torch.cat(l2), torch.cat(linf)
        rows.append(
            {
                "eps": float(eps),
                "robust_accuracy": correct / max(len(x), 1),
                "mean_l2_success": float(l2_all.mean()) if len(l2_all) else 0.0,
                "mean_linf_success": float(linf_all.mean()) if len(linf_all) else 0.0,
                "seconds": time.perf_counter() - start,
            }
        )
    return rows
