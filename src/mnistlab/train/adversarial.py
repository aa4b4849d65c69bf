"""Adversarial training helpers: PGD training (Madry et al. 2018), FGSM with a random
start (Wong, Rice and Kolter 2020, "Fast is better than free") and TRADES (Zhang et al.
2019, "Theoretically principled trade-off between robustness and accuracy").

PGD and FGSM-RS train on the cross-entropy of the adversarial examples they craft.
TRADES crafts by maximising the KL divergence between the model's clean and perturbed
predictions, and trains on the clean cross-entropy plus ``beta`` times that KL
(:func:`trades_loss`): ``beta`` trades clean accuracy for robustness.

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

from mnistlab.core.autopgd import apgd
from mnistlab.core.tensors import (
    as_eps,
    batches,
    frozen,
    per_image,
    predict,
    project,
    uniform_start,
)

Method = Literal["pgd", "fgsm_rs", "trades"]
METHODS = ("pgd", "fgsm_rs", "trades")
TRADES_START = 0.001  # std of TRADES' Gaussian start around the clean image (the authors')
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
    """Training-time L-inf adversarial examples.

    ``"pgd"`` and ``"fgsm_rs"`` ascend the cross-entropy from a uniform point of the
    eps-ball (clamped to [0, 1]). ``"pgd"``: ``steps`` signed-gradient steps of
    ``step_ratio * eps``, each projected onto the ball and [0, 1] (Madry et al.; default
    ratio ``2.5 / steps``). ``"fgsm_rs"``: one such step (``steps`` is ignored; default
    ratio 1.25, Wong et al.'s ``alpha = 1.25 * eps``). ``"trades"``: ``steps`` such steps
    on ``KL(p(x) || p(x'))``, the divergence of the perturbed prediction from the clean
    one, from ``x`` plus Gaussian noise of std 0.001 (Zhang et al.'s start; the label
    is not used).

    Args:
        x: ``(B, 1, 28, 28)`` pixels in [0, 1]; y: ``(B,)`` labels.
        eps: L-inf radius (0 returns a copy of ``x``).
        generator: draws the random start.
        bn: BatchNorm statistics while crafting, ``"running"`` (eval mode, default)
            or ``"batch"``; see the module docstring.

    Returns:
        ``(B, 1, 28, 28)`` detached, in [0, 1] and within ``eps`` of ``x``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if bn not in ("running", "batch"):
        raise ValueError(f"bn must be 'running' or 'batch', got {bn!r}")
    x = x.detach()
    if eps == 0 or not len(x):
        return x.clone()
    n_steps = 1 if method == "fgsm_rs" else steps
    if step_ratio is None:
        step_ratio = 1.25 if method == "fgsm_rs" else 2.5 / max(n_steps, 1)
    e = as_eps(eps, len(x), x.device)
    eps4 = per_image(e, x)  # (B, 1, 1, 1)
    with _crafting(model, bn):
        if method == "trades":
            with torch.no_grad():
                clean_logp = F.log_softmax(model(x), 1)  # (B, C), the fixed reference
            noise = torch.randn(x.shape, generator=generator, device=x.device)
            adv = project(x + TRADES_START * noise, x, eps4)
        else:
            adv = uniform_start(x, e, generator)
        for _ in range(n_steps):
            adv.requires_grad_(True)
            with torch.enable_grad():
                logits = model(adv)
                if method == "trades":
                    loss = _kl(clean_logp, F.log_softmax(logits, 1), reduction="sum")
                else:
                    loss = F.cross_entropy(logits, y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, adv)
            with torch.no_grad():
                adv = project(adv.detach() + step_ratio * eps4 * grad.sign(), x, eps4)
    return adv.detach()


def _kl(logp: Tensor, logq: Tensor, *, reduction: str) -> Tensor:
    """``KL(p || q)`` per row from log-probabilities ``(B, C)``, summed or averaged over
    the rows (``reduction`` "sum" or "batchmean")."""
    return F.kl_div(logq, logp, log_target=True, reduction=reduction)


def trades_loss(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, *, beta: float) -> Tensor:
    """TRADES' training loss: ``CE(f(x), y) + beta * KL(p(x) || p(x_adv))``, each the
    mean over the batch; the gradient flows through both predictions, as in the
    authors' code.

    Args:
        x: ``(B, 1, 28, 28)`` clean pixels; x_adv: the crafted ones (:func:`perturb`
            with ``method="trades"``); y: ``(B,)`` labels.
    """
    logits = model(x)  # (B, C)
    adv_logits = model(x_adv)  # (B, C)
    robust = _kl(F.log_softmax(logits, 1), F.log_softmax(adv_logits, 1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * robust


def apgd_ce_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    n_iter: int = 20,
    generator: torch.Generator,
    batch_size: int = 500,
) -> float:
    """Accuracy under APGD-CE (one random start, eval mode), the first member of the
    strong evaluation, e.g. on a held-out set after each epoch. Not the attack a model
    trains against: a collapse while clean accuracy holds signals catastrophic
    overfitting (Wong et al. 2020), and a model tuned to its own attack is not judged by it.

    Args:
        x: ``(N, 1, 28, 28)`` pixels in [0, 1]; y: ``(N,)`` labels.
        n_iter: APGD iterations.
    """
    if not len(x):
        return 0.0
    correct = 0
    for s in batches(len(x), batch_size):
        adv = apgd(model, x[s], y[s], eps=eps, loss="ce", n_iter=n_iter, generator=generator)
        correct += int((predict(model, adv, batch_size=batch_size) == y[s]).sum())
    return correct / len(x)
