"""The per-image minimal L-inf eps at which an attack flips an image, by a batched
binary search over any ``(x, y, eps) -> robust`` attack.

Conventions as in :mod:`mnistlab.attacks.strong.apgd`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mnistlab.core.tensors import predict

RobustFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x, y, eps (N,)) -> robust (N,) bool


def minimal_eps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attack: RobustFn,
    hi: float = 0.5,
    tol: float = 1 / 255,
    batch_size: int = 1000,
) -> Tensor:
    """Smallest L-inf radius at which ``attack`` flips each image, by binary search.

    All images bisect together: each step makes one ``attack`` call on every image
    still searching, each at its own radius (an ``(M,)`` tensor). A random attack
    need not be monotone in eps, so the search keeps, per image, ``lo`` = the largest
    eps seen robust (0: the clean image is correct) and ``up`` = the smallest eps seen
    broken, and only ever tests midpoints between them; it stops when
    ``up - lo <= tol``.

    Args:
        x: ``(N, 1, 28, 28)`` pixels in [0, 1]; y: ``(N,)`` labels.
        attack: ``(x (M, ...), y (M,), eps (M,)) -> robust (M,) bool``, e.g.
            :func:`mnistlab.attacks.strong.ensemble.strong_attack_fn`.
        hi: largest radius tried. tol: precision of the result.
        batch_size: for the clean predictions only (``attack`` batches itself).

    Returns:
        ``(N,)`` float: 0 for images misclassified clean, ``inf`` for images still
        robust at ``hi``, else ``up``: a radius at which the attack did flip the
        image, with a radius in ``[up - tol, up)`` at which it did not.
    """
    n = len(x)
    out = torch.full((n,), float("inf"), device=x.device)
    ok = predict(model, x, batch_size=batch_size) == y
    out[~ok] = 0.0
    idx = ok.nonzero().squeeze(1)
    if not len(idx):
        return out
    top = torch.full((len(idx),), hi, device=x.device)
    broken = idx[~attack(x[idx], y[idx], top).to(x.device)]  # the others stay at inf
    lo = torch.zeros(len(broken), device=x.device)
    up = torch.full((len(broken),), hi, device=x.device)
    while True:
        j = ((up - lo) > tol).nonzero().squeeze(1)
        if not len(j):
            break
        mid = (lo[j] + up[j]) / 2
        robust = attack(x[broken[j]], y[broken[j]], mid).to(x.device)
        lo[j[robust]] = mid[robust]
        up[j[~robust]] = mid[~robust]
    out[broken] = up
    return out
