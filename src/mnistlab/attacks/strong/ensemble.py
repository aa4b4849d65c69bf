"""The APGD-CE + APGD-T(DLR) ensemble (AutoAttack's APGD part): per-image worst case over
every attack and restart, and the same as an ``(x, y, eps) -> robust`` callable.

Conventions as in :mod:`mnistlab.attacks.strong.apgd`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import Tensor, nn

from mnistlab.attacks.common.selection import mean
from mnistlab.attacks.strong.min_eps import RobustFn
from mnistlab.core.autopgd import Loss, apgd
from mnistlab.core.tensors import as_eps, batches, frozen, predict

ATTACKS = ("apgd_ce", "apgd_dlr_t")


@dataclasses.dataclass
class StrongResult:
    """Outcome of :func:`strong_attack` on ``N`` images."""

    robust: Tensor  # (N,) bool: correct clean and under every attack and restart
    x_adv: Tensor  # (N, 1, 28, 28) first adversarial found per image, else the clean image
    robust_by_attack: dict[str, Tensor]  # name -> (N,) bool, see strong_attack's ``cascade``
    clean: Tensor  # (N,) bool: correct on the clean image
    seconds: float

    @property
    def robust_accuracy(self) -> float:
        return mean(self.robust)

    def accuracy(self, name: str) -> float:
        """Robust accuracy under one attack of the ensemble (``"apgd_ce"``, ...)."""
        return mean(self.robust_by_attack[name])


def _top_other_classes(logits: Tensor, y: Tensor, k: int) -> Tensor:
    """The ``k`` highest-scoring classes other than ``y``: ``(B, C)`` -> ``(B, k)``."""
    order = logits.argsort(1, descending=True)  # (B, C)
    others = order[order != y[:, None]].view(len(y), -1)  # (B, C - 1)
    return others[:, :k]


def _attack_subset(
    *,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Tensor,
    mask: Tensor,
    alive: Tensor,
    x_adv: Tensor,
    loss: Loss,
    target: Tensor | None,
    n_iter: int,
    generator: torch.Generator,
    batch_size: int,
) -> Tensor:
    """One APGD run on the images in ``mask`` ``(B,)``; returns ``mask`` minus those broken.

    An image counts as broken when the model misclassifies the run's output. The first
    success per image (``alive`` still set) is written to ``x_adv`` ``(B, 1, 28, 28)``
    and clears ``alive``; both are updated in place.
    """
    i = mask.nonzero().squeeze(1)
    if not len(i):
        return mask
    adv = apgd(
        model,
        x[i],
        y[i],
        eps=eps[i],
        loss=loss,
        target=None if target is None else target[i],
        n_iter=n_iter,
        generator=generator,
    )
    broke = predict(model, adv, batch_size=batch_size) != y[i]
    first = broke & alive[i]
    x_adv[i[first]] = adv[first]
    alive[i[broke]] = False
    left = mask.clone()
    left[i[broke]] = False
    return left


def strong_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    n_iter: int = 100,
    n_restarts: int = 1,
    n_targets: int = 3,
    first_target: int = 0,
    batch_size: int = 500,
    generator: torch.Generator,
    cascade: bool = True,
) -> StrongResult:
    """APGD-CE with restarts, then targeted APGD-DLR on the top ``n_targets`` classes.

    Per batch of ``batch_size`` images: the clean images are classified (a wrong one
    is non-robust, its ``x_adv`` is itself); APGD-CE runs ``n_restarts`` times, each
    restart (a new random start) only on the images no earlier restart broke; then
    APGD-T with the targeted DLR loss runs once per target class, the
    ``n_targets`` non-true classes with the highest clean logits in order, each
    only on the images not broken yet. Whether an attack broke an image is checked
    by classifying its output again. ``robust`` is the worst case over everything:
    an image is robust only if it survived every attack and restart.

    Args:
        x: ``(N, 1, 28, 28)`` pixels in [0, 1]; y: ``(N,)`` labels.
        eps: L-inf radius, float or ``(N,)``; ``eps == 0`` gives clean correctness.
        n_iter: APGD iterations per run. n_restarts: APGD-CE runs.
        n_targets: target classes for APGD-T (one run each; capped at ``C - 1``).
        first_target: skip the first this many of them, already attacked (a larger
            budget continuing a smaller one: ``n_restarts=0, first_target=k``).
        generator: random starts, drawn in a fixed order for a fixed input.
        cascade: ``True`` (cheap): APGD-T only attacks the images APGD-CE left
            robust, and ``robust_by_attack["apgd_dlr_t"]`` is the robustness after
            both (AutoAttack's running robust accuracy; ``"apgd_ce"`` is APGD-CE
            alone). ``False``: APGD-T attacks every clean-correct image too, and each
            entry of ``robust_by_attack`` is that attack alone.

    Returns:
        A :class:`StrongResult`.
    """
    start = time.perf_counter()
    n = len(x)
    eps_all = as_eps(eps, n, x.device)
    x_adv = x.detach().clone()
    clean = torch.zeros(n, dtype=torch.bool, device=x.device)
    rob = {name: torch.zeros_like(clean) for name in ATTACKS}
    with frozen(model):
        for sl in batches(n, batch_size):
            xs, ys, es = x[sl].detach(), y[sl], eps_all[sl]
            with torch.no_grad():
                logits = model(xs)  # (B, C)
            ok = logits.argmax(1) == ys
            alive = ok.clone()  # not broken by anything so far
            adv_s = x_adv[sl]  # view: writes go to x_adv
            run = dict(
                model=model,
                x=xs,
                y=ys,
                eps=es,
                alive=alive,
                x_adv=adv_s,
                n_iter=n_iter,
                generator=generator,
                batch_size=batch_size,
            )
            ce = ok.clone()
            for _ in range(n_restarts):
                ce = _attack_subset(mask=ce, loss="ce", target=None, **run)
            dlr = ce.clone() if cascade else ok.clone()
            k = min(n_targets, logits.shape[1] - 1)
            targets = _top_other_classes(logits, ys, k)  # (B, k)
            for j in range(first_target, k):
                dlr = _attack_subset(mask=dlr, loss="dlr_t", target=targets[:, j], **run)
            clean[sl], rob["apgd_ce"][sl], rob["apgd_dlr_t"][sl] = ok, ce, dlr
    robust = clean & rob["apgd_ce"] & rob["apgd_dlr_t"]
    return StrongResult(
        robust=robust,
        x_adv=x_adv,
        robust_by_attack=rob,
        clean=clean,
        seconds=time.perf_counter() - start,
    )


def strong_attack_fn(model: nn.Module, *, generator: torch.Generator, **settings: Any) -> RobustFn:
    """:func:`strong_attack` as an ``(x, y, eps) -> robust (N,) bool`` callable.

    Args:
        generator: the random starts of every call.
        settings: :func:`strong_attack`'s other keyword arguments (``n_iter``,
            ``n_restarts``, ``n_targets``, ``batch_size``, ...), the same for every call;
            its defaults for the rest.
    """

    def fn(x: Tensor, y: Tensor, eps: Tensor) -> Tensor:
        return strong_attack(model, x, y, eps=eps, generator=generator, **settings).robust

    return fn
