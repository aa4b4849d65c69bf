"""Strong L-inf evaluation: Auto-PGD (Croce and Hein 2020), an APGD-CE + APGD-T(DLR)
ensemble, and a per-image minimal eps by batched binary search.

Conventions (as in ``mnistlab.attacks``): pixels in [0, 1] shaped ``(B, 1, 28, 28)``,
outputs kept in [0, 1] and within ``eps`` of the input; the model runs in eval mode
with its parameters frozen for the duration of a call (gradients are taken with
respect to the input only) and its state is restored afterwards; randomness comes
only from a ``torch.Generator`` argument; tensors stay on the device of the inputs.
``eps`` may be a float or a per-image ``(N,)`` tensor everywhere.

Reference: F. Croce, M. Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020 (Algorithm 1, section 3).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
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

Loss = Literal["ce", "dlr_t"]
RobustFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x, y, eps (N,)) -> robust (N,) bool

ATTACKS = ("apgd_ce", "apgd_dlr_t")


# --------------------------------------------------------------------------- APGD


def checkpoints(n_iter: int) -> list[int]:
    """Iterations ``w_1 < w_2 < ... <= n_iter`` after which the step size is checked.

    ``w_j ~ p_j * n_iter`` with ``p_0 = 0``, ``p_1 = 0.22`` and
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, computed in whole iterations
    as in the authors' code (so every interval is at least one iteration long).
    For ``n_iter=100``: 22, 41, 57, 70, 80, 87, 93, 99.
    """
    length = max(int(0.22 * n_iter), 1)
    shrink = max(int(0.03 * n_iter), 1)
    shortest = max(int(0.06 * n_iter), 1)
    out, w = [], 0
    while w + length <= n_iter:
        w += length
        out.append(w)
        length = max(length - shrink, shortest)
    return out


def _loss(logits: Tensor, y: Tensor, target: Tensor | None, kind: Loss) -> Tensor:
    """Per-image loss to maximise ``(B,)`` from logits ``(B, C)``.

    ``"ce"``: cross-entropy to the true class. ``"dlr_t"``: targeted DLR,
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` with ``z_pi`` the logits
    sorted in decreasing order (needs at least 4 classes).
    """
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if logits.shape[1] < 4:
        raise ValueError("the targeted DLR loss needs at least 4 classes")
    rows = torch.arange(len(y), device=y.device)
    z = logits.sort(1, descending=True).values  # (B, C)
    scale = z[:, 0] - 0.5 * (z[:, 2] + z[:, 3]) + 1e-12
    return -(logits[rows, y] - logits[rows, target]) / scale


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    loss: Loss = "ce",
    target: Tensor | int | None = None,
    n_iter: int = 100,
    generator: torch.Generator,
    early_stop: bool = True,
    rho: float = 0.75,
    momentum: float = 0.75,
) -> Tensor:
    """Auto-PGD under the L-inf norm (one run, from one uniform random start).

    Signed-gradient steps with momentum, starting at step size ``2 * eps``; at every
    checkpoint (:func:`checkpoints`) an image's step size is halved and the image
    restarts from its best (max-loss) point, with its gradient there, if
    condition 1 (the loss increased in fewer than ``rho`` of the steps since the last
    checkpoint) or condition 2 (its step size was not halved at the last checkpoint
    and its best loss has not improved since) holds. After a restart the next step
    has no momentum term (like the first step). Every image has its own step size,
    best point and checks; the images never interact (the model is in eval mode), so
    the result for an image does not depend on the others in the batch.

    With ``early_stop`` an image stops at the first iterate the model misclassifies
    (the random start included) and later iterations run on the still-correct images
    only, so a weak model costs little. Up to that iterate its trajectory is the one
    it would follow without early stopping, so the set of images fooled can only
    grow. Success is misclassification (any class but ``y``), also for ``"dlr_t"``.

    Small differences from the authors' code (``autopgd_base.py``), none of which
    changed a result in a side-by-side run on a tiny model: condition 1 uses the
    paper's strict ``<`` (the code has ``<=``); after a restart the momentum term is
    dropped (the code reuses a displacement from before the restart); the start is
    uniform in the ball (the code rescales it to L-inf norm exactly ``eps``).

    Args:
        x: ``(N, 1, 28, 28)`` pixels in [0, 1]; y: ``(N,)`` true labels.
        eps: L-inf radius, a float or ``(N,)``; images with ``eps == 0`` are returned
            unchanged.
        loss: ``"ce"`` (untargeted cross-entropy) or ``"dlr_t"`` (targeted DLR, needs
            ``target``).
        target: ``(N,)`` target classes (or one int for all) for ``"dlr_t"``.
        n_iter: iterations (one forward/backward each, plus one at the start).
        generator: draws the random start, for all ``N`` images at once.
        early_stop: stop updating an image once it is misclassified.
        rho: threshold of condition 1 (the paper's 0.75).
        momentum: the paper's ``alpha`` (0.75): a step is ``alpha`` times the projected
            signed-gradient step plus ``1 - alpha`` times the previous displacement.

    Returns:
        ``(N, 1, 28, 28)``: per image, the first misclassified iterate if any, else
        the iterate of maximum loss; in [0, 1] and within ``eps`` of ``x``.
    """
    if loss not in ("ce", "dlr_t"):
        raise ValueError(f"loss must be 'ce' or 'dlr_t', got {loss!r}")
    x, y = x.detach(), y.detach()
    n = len(x)
    eps_all = as_eps(eps, n, x.device)  # (N,)
    tgt = None
    if loss == "dlr_t":
        if target is None:
            raise ValueError("loss='dlr_t' needs a target")
        tgt = torch.as_tensor(target, dtype=torch.long, device=x.device).expand(n)
    out = x.clone()
    if n == 0:
        return out
    start = uniform_start(x, eps_all, generator)  # drawn for all N: independent of early stop
    idx = (eps_all > 0).nonzero().squeeze(1)
    if not len(idx) or n_iter < 1:
        out[idx] = start[idx]
        return out

    def loss_grad(v: Tensor, yy: Tensor, tt: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        v = v.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(v)  # (B, C)
            value = _loss(logits, yy, tt, loss)  # (B,)
            (g,) = torch.autograd.grad(value.sum(), v)
        return logits.detach(), value.detach(), g

    with frozen(model):
        # State of the images still attacked, all with leading dim B (active images).
        s: dict[str, Tensor] = {
            "idx": idx,
            "x": x[idx],
            "y": y[idx],
            "eps": per_image(eps_all[idx], x),
            "cur": start[idx],
        }
        if tgt is not None:
            s["t"] = tgt[idx]
        logits, value, grad = loss_grad(s["cur"], s["y"], s.get("t"))
        s.update(
            grad=grad,
            loss=value,  # gradient and loss at the current iterate
            prev=s["cur"].clone(),  # previous iterate, for momentum
            step=2 * eps_all[idx],  # (B,) step size
            fresh=torch.ones(len(idx), dtype=torch.bool, device=x.device),  # next step w/o momentum
            best=s["cur"].clone(),
            best_grad=grad.clone(),
            best_loss=value.clone(),
            best_at_check=value.clone(),  # best loss at the last checkpoint
            reduced=torch.zeros(len(idx), dtype=torch.bool, device=x.device),  # at last check
            incr=torch.zeros(len(idx), device=x.device),  # loss increases since last check
            found=logits.argmax(1) != s["y"],
            adv=s["cur"].clone(),  # first misclassified
        )

        def settle() -> None:
            """With early stop: write out the misclassified images and drop them."""
            if early_stop and bool(s["found"].any()):
                done = s["found"]
                out[s["idx"][done]] = s["adv"][done]
                for k in list(s):
                    s[k] = s[k][~done]

        settle()
        marks = checkpoints(n_iter)
        last_mark, next_mark = 0, (marks[0] if marks else -1)
        for i in range(n_iter):
            if not len(s["idx"]):
                break
            with torch.no_grad():
                cur, eps4 = s["cur"], s["eps"]
                a = torch.where(s["fresh"], 1.0, momentum)
                a = per_image(a, cur)
                z = project(cur + per_image(s["step"], cur) * s["grad"].sign(), s["x"], eps4)
                new = project(cur + a * (z - cur) + (1 - a) * (cur - s["prev"]), s["x"], eps4)
                s["prev"], s["cur"] = cur, new
                s["fresh"] = torch.zeros_like(s["fresh"])
            logits, value, grad = loss_grad(s["cur"], s["y"], s.get("t"))
            with torch.no_grad():
                wrong = logits.argmax(1) != s["y"]
                first = wrong & ~s["found"]
                s["adv"][first] = s["cur"][first]
                s["found"] = s["found"] | wrong
                s["incr"] += (value > s["loss"]).float()
                s["loss"], s["grad"] = value, grad
                better = value > s["best_loss"]
                s["best"][better] = s["cur"][better]
                s["best_grad"][better] = grad[better]
                s["best_loss"] = torch.where(better, value, s["best_loss"])
                if i + 1 == next_mark:
                    cond1 = s["incr"] < rho * (next_mark - last_mark)
                    cond2 = ~s["reduced"] & (s["best_loss"] <= s["best_at_check"])
                    red = cond1 | cond2
                    s["step"] = torch.where(red, s["step"] / 2, s["step"])
                    s["cur"][red] = s["best"][red]
                    s["grad"][red] = s["best_grad"][red]
                    s["loss"] = torch.where(red, s["best_loss"], s["loss"])
                    s["fresh"] = red
                    s["reduced"] = red
                    s["best_at_check"] = s["best_loss"].clone()
                    s["incr"] = torch.zeros_like(s["incr"])
                    k = marks.index(next_mark)
                    last_mark, next_mark = next_mark, (marks[k + 1] if k + 1 < len(marks) else -1)
            settle()
        out[s["idx"]] = torch.where(per_image(s["found"], s["adv"]), s["adv"], s["best"])
    return out


# --------------------------------------------------------------------------- ensemble


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
        return float(self.robust.float().mean()) if len(self.robust) else 0.0

    def accuracy(self, name: str) -> float:
        """Robust accuracy under one attack of the ensemble (``"apgd_ce"``, ...)."""
        r = self.robust_by_attack[name]
        return float(r.float().mean()) if len(r) else 0.0


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
            for j in range(k):
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


def strong_attack_fn(
    model: nn.Module,
    *,
    generator: torch.Generator,
    n_iter: int = 100,
    n_restarts: int = 1,
    n_targets: int = 3,
    batch_size: int = 500,
) -> RobustFn:
    """:func:`strong_attack` as an ``(x, y, eps) -> robust (N,) bool`` callable."""

    def fn(x: Tensor, y: Tensor, eps: Tensor) -> Tensor:
        return strong_attack(
            model,
            x,
            y,
            eps=eps,
            n_iter=n_iter,
            n_restarts=n_restarts,
            n_targets=n_targets,
            batch_size=batch_size,
            generator=generator,
        ).robust

    return fn


# --------------------------------------------------------------------------- minimal eps


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
            :func:`strong_attack_fn`.
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
