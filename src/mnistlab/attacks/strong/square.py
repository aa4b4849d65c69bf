"""The Square Attack (Andriushchenko, Croce, Flammarion and Hein, ECCV 2020) under the L-inf
norm: a random search that only queries the model's logits, AutoAttack's black-box member.

Conventions as in :mod:`mnistlab.attacks.strong.apgd`, except that no gradient is ever
taken: the model only runs forward.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mnistlab.core.tensors import as_eps, frozen, per_image

SIDE = 28  # image height and width
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # p halves after these, of 10k
_BITS = 24  # per-iteration random integers are drawn in [0, 2**_BITS)


def p_selection(p_init: float, i: int, n_queries: int) -> float:
    """Fraction of the pixels the square of iteration ``i`` (0-based) covers.

    The authors' piecewise-constant schedule, written for 10000 queries and rescaled to
    ``n_queries``: with ``it = int(i / n_queries * 10000)``, ``p = p_init / 2**k`` where
    ``k`` counts the thresholds 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 that
    ``it`` exceeds (``p = p_init`` up to ``it = 10``, ``p_init / 2`` for 11..50, ...).
    """
    it = int(i / n_queries * 10000)
    return p_init / 2 ** sum(it > t for t in HALVINGS)


def square_side(p: float) -> int:
    """Side of the square covering a fraction ``p`` of the 28 x 28 pixels, in [1, 27].

    ``round(sqrt(p * 784))``, at least 1; at most 27 as in the authors' code, so that a
    square never covers the whole image.
    """
    return min(max(round(math.sqrt(p * SIDE * SIDE)), 1), SIDE - 1)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """``z_y - max_{j != y} z_j`` ``(B,)`` from logits ``(B, C)``; < 0: misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return (true - other).float()


def square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    n_queries: int,
    generator: torch.Generator,
    p_init: float = 0.8,
    early_stop: bool = True,
) -> tuple[Tensor, Tensor]:
    """Untargeted L-inf Square Attack on the margin loss ``z_y - max_{j != y} z_j``.

    Every pixel of the perturbation is ``+eps`` or ``-eps`` (then clamped to [0, 1]).
    The start gives every column of an image one random sign (vertical stripes); then
    each iteration proposes, per image, a random square whose pixels all take one
    random sign, and keeps it if the margin drops (strictly). The square covers a
    fraction :func:`p_selection` of the image, shrinking as the queries run out. An
    image counts as broken once its margin is below 0.

    The candidate's sign is redrawn while it would leave the image unchanged (the
    authors' reference code does so, so that no query is wasted). For ``eps > 0`` the
    two signs always give different pixels, even after clamping, so the image is
    unchanged exactly when the square already holds one sign and the draw repeats it;
    the redraw loop then ends with the opposite sign. We take that sign directly: the
    same distribution as the loop, with no loop.

    Every iteration draws the square and sign for all ``N`` images and uses the rows of
    the images still attacked, so a draw does not depend on when other images stop.
    The numbers of iteration ``t`` come from a private generator seeded with
    ``seed + t`` (``seed`` drawn once from ``generator``): drawn from ``generator``
    itself, image ``k``'s numbers at iteration ``t`` would sit near position
    ``t * N + k`` of one stream and change with ``N``. So an image's result depends only
    on ``generator``'s state and its index, not on the other images (attacking the
    first 8 of 16 images gives the same result for those 8). The model is in eval mode.

    Differences from AutoAttack's ``square.py``: each image has its own square (there,
    one square per iteration is shared by the batch); a corner may be any of the
    ``28 - s + 1`` positions per axis (there, the last one is never drawn); the start
    counts as the first of ``n_queries`` queries (there, ``n_queries`` iterations
    follow the start).

    Args:
        model: pixels ``(B, 1, 28, 28)`` -> logits ``(B, C)``.
        x: ``(N, 1, 28, 28)`` pixels in [0, 1]; y: ``(N,)`` true labels.
        eps: L-inf radius, a float or ``(N,)``; images with ``eps == 0`` are returned
            unchanged, with 0 queries.
        n_queries: forward passes per image at most, the start included.
        generator: the source of all randomness: one number drawn per call (``N > 0``).
        p_init: the fraction of pixels of the first squares (the paper's 0.8).
        early_stop: stop querying an image once it is broken. Without it the search
            goes on; an image's trajectory up to its break is the same either way and
            its margin can only drop, so the same images end up broken.

    Returns:
        ``(x_adv, queries)``: ``x_adv`` ``(N, 1, 28, 28)``, per image the first broken
        iterate (with ``early_stop``) or the iterate of lowest margin, but the clean
        image where that margin is above the clean one (a bad start the search never
        recovered from), so the margin never rises; in [0, 1] and within ``eps`` of
        ``x``. ``queries`` ``(N,)`` long: forward passes spent on the image's
        perturbed versions (the one clean forward is not counted); 0 for images
        misclassified clean, which are returned unchanged.
    """
    if n_queries < 0:
        raise ValueError(f"n_queries must be >= 0, got {n_queries}")
    if not 0 < p_init <= 1:
        raise ValueError(f"p_init must be in (0, 1], got {p_init}")
    x, y = x.detach(), y.detach()
    n = len(x)
    eps_all = as_eps(eps, n, x.device)  # (N,)
    out = x.clone()
    queries = torch.zeros(n, dtype=torch.long, device=x.device)
    if n == 0:
        return out, queries
    dev = generator.device
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=dev))
    rng = torch.Generator(device=dev)

    def draw(t: int, high: int, shape: tuple[int, ...]) -> Tensor:
        """Integers in [0, high) for all N images at iteration t (0: the start)."""
        rng.manual_seed(seed + t)
        return torch.randint(0, high, shape, generator=rng, device=dev).to(x.device)

    idx = (eps_all > 0).nonzero().squeeze(1)
    if not len(idx) or n_queries == 0:
        return out, queries
    stripes = draw(0, 2, (n, 1, 1, SIDE)) * 2.0 - 1  # (N, 1, 1, 28): one sign per column

    with frozen(model), torch.no_grad():
        clean = margin(model(x[idx]), y[idx])
        ok = clean >= 0  # misclassified clean: nothing to do, 0 queries
        idx, clean = idx[ok], clean[ok]
        if not len(idx):
            return out, queries
        xs, eps4 = x[idx], per_image(eps_all[idx], x)
        sign = stripes[idx].expand(-1, 1, SIDE, SIDE).clone()  # (B, 1, 28, 28), +-1
        cur = (xs + eps4 * sign).clamp(0, 1)
        # State of the images still attacked, all with leading dim B.
        s: dict[str, Tensor] = {
            "idx": idx,
            "x": xs,
            "y": y[idx],
            "eps": eps4,
            "clean": clean,
            "sign": sign,
            "cur": cur,
            "margin": margin(model(cur), y[idx]),
        }
        queries[idx] = 1

        def settle() -> None:
            """With early stop: write out the broken images and drop them."""
            done = s["margin"] < 0
            if early_stop and bool(done.any()):
                out[s["idx"][done]] = s["cur"][done]
                for k in list(s):
                    s[k] = s[k][~done]

        settle()
        pos = torch.arange(SIDE, device=x.device)
        for i in range(n_queries - 1):
            if not len(s["idx"]):
                break
            side = square_side(p_selection(p_init, i, n_queries))
            r = draw(i + 1, 2**_BITS, (n, 3))[s["idx"]]  # (B, 3): row, column, sign
            corner = (r[:, :2] * (SIDE - side + 1)) >> _BITS  # (B, 2), uniform in [0, 28 - side]
            rows = (pos >= corner[:, :1]) & (pos < corner[:, :1] + side)  # (B, 28)
            cols = (pos >= corner[:, 1:]) & (pos < corner[:, 1:] + side)
            inside = (rows[:, :, None] & cols[:, None, :])[:, None]  # (B, 1, 28, 28)
            value = (r[:, 2] & 1) * 2.0 - 1  # (B,)
            total = (s["sign"] * inside).sum((1, 2, 3))  # exact: a sum of +-1
            uniform = total.abs() == side * side
            value = torch.where(uniform, -total.sign(), value)  # see the docstring
            sign = torch.where(inside, per_image(value, inside), s["sign"])
            cand = (s["x"] + s["eps"] * sign).clamp(0, 1)
            m = margin(model(cand), s["y"])
            queries[s["idx"]] += 1
            better = m < s["margin"]
            s["sign"] = torch.where(per_image(better, sign), sign, s["sign"])
            s["cur"] = torch.where(per_image(better, cand), cand, s["cur"])
            s["margin"] = torch.where(better, m, s["margin"])
            settle()
        keep = per_image(s["margin"] <= s["clean"], s["cur"])
        out[s["idx"]] = torch.where(keep, s["cur"], s["x"])
    return out, queries
