"""Auto-PGD itself (Croce and Hein 2020, Algorithm 1): one L-inf run from one uniform
random start, with per-image step sizes, checkpoints and early stopping.

Conventions as in :mod:`mnistlab.attacks.strong.apgd`. In core because adversarial training
checks each epoch with it (train imports no attack package).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnistlab.core.tensors import as_eps, frozen, per_image, project, uniform_start

Loss = Literal["ce", "dlr_t"]


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


def _copy_rows(s: dict[str, Tensor], mask: Tensor, **sources: Tensor) -> None:
    """``s[k][mask] = v[mask]`` for every ``k=v``: the active images in ``mask`` ``(B,)``
    take their entries of state ``k`` from ``v`` (leading dim ``B``), in place."""
    for k, v in sources.items():
        s[k][mask] = v[mask]


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
                _copy_rows(s, wrong & ~s["found"], adv=s["cur"])  # first misclassified
                s["found"] = s["found"] | wrong
                s["incr"] += (value > s["loss"]).float()
                s["loss"], s["grad"] = value, grad
                better = value > s["best_loss"]
                _copy_rows(s, better, best=s["cur"], best_grad=grad, best_loss=value)
                if i + 1 == next_mark:
                    cond1 = s["incr"] < rho * (next_mark - last_mark)
                    cond2 = ~s["reduced"] & (s["best_loss"] <= s["best_at_check"])
                    red = cond1 | cond2
                    s["step"] = torch.where(red, s["step"] / 2, s["step"])
                    # restart from the best point, with its gradient and loss
                    _copy_rows(s, red, cur=s["best"], grad=s["best_grad"], loss=s["best_loss"])
                    s["fresh"] = red
                    s["reduced"] = red
                    s["best_at_check"] = s["best_loss"].clone()
                    s["incr"] = torch.zeros_like(s["incr"])
                    k = marks.index(next_mark)
                    last_mark, next_mark = next_mark, (marks[k + 1] if k + 1 < len(marks) else -1)
            settle()
        out[s["idx"]] = torch.where(per_image(s["found"], s["adv"]), s["adv"], s["best"])
    return out
