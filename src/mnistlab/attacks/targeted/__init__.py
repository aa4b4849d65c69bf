"""Targeted attack (report figs. 14-16): test images pushed to target classes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mnistlab.attacks.common.ascent import adam_ascent, sq_norm, target_objective
from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.selection import mean, originals
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.tensors import frozen


@dataclasses.dataclass
class TargetedResult:
    """Targeted adversarial examples: every original pushed towards every target."""

    targets: list[int]  # (T,)
    images: Tensor  # (T, N, 1, 28, 28) pixels in [0, 1]
    cost: Tensor  # (steps + 1, T, N) target logit per iteration
    predicted: Tensor  # (T, N)
    confidence: Tensor  # (T, N) softmax probability of the target
    l2: Tensor  # (T, N) L2 distance to the original
    linf: Tensor  # (T, N) L-inf distance to the original

    @property
    def success(self) -> Tensor:
        """``(T, N)`` bool: the example is classified as its target."""
        t = torch.tensor(self.targets, device=self.predicted.device)
        return self.predicted == t[:, None]


def targeted(
    model: nn.Module,
    originals: Tensor,
    *,
    targets: Sequence[int],
    steps: int,
    lr: float,
    beta: float,
) -> TargetedResult:
    """Push every original towards every target class, all pairs in one batch.

    Maximises ``logit_target(x) - beta * ||x - x0||^2`` with Adam from ``x = x0``,
    clamping to [0, 1] after every step.

    Args:
        originals: ``(N, 1, 28, 28)`` pixels in [0, 1].
        targets: ``T`` target classes.
        steps: Adam iterations.
        lr: Adam step size, in pixel units.
        beta: weight of the squared L2 distance to the original.
    """
    t, n = len(targets), len(originals)
    x0 = originals.detach().unsqueeze(0).expand(t, *originals.shape).reshape(t * n, 1, 28, 28)
    target = torch.tensor(list(targets), device=x0.device).repeat_interleave(n)  # (T*N,) t-major
    x = x0.clone()
    with frozen(model):
        objective = target_objective(model, target, lambda v: beta * sq_norm(v - x0))
        cost, logits = adam_ascent(x, objective, steps, lr, lambda v: v.clamp_(0, 1))
    probs = logits.softmax(1)
    rows = torch.arange(t * n, device=x0.device)
    diff = (x.detach() - x0).flatten(1)
    return TargetedResult(
        targets=[int(k) for k in targets],
        images=x.detach().view(t, n, 1, 28, 28),
        cost=cost.view(-1, t, n),
        predicted=probs.argmax(1).view(t, n),
        confidence=probs[rows, target].view(t, n),
        l2=diff.norm(dim=1).view(t, n),
        linf=diff.abs().amax(1).view(t, n),
    )


def compute(inp: AttackInputs) -> StageOutputs:
    """The ``attack@targeted-<model>`` stage: one test image per class pushed to each target."""
    model, test, params, device = inp.model, inp.test, inp.params, inp.device
    from mnistlab.attacks.targeted import figures

    cfg = params.attacks.targeted
    idx, x0 = originals(model, test, seed=params.seed, device=device)
    labels = test[1][idx]
    res = targeted(model, x0, targets=cfg.targets, steps=cfg.steps, lr=cfg.lr, beta=cfg.beta)
    pred, conf = res.predicted.cpu(), res.confidence.cpu()
    target = torch.tensor(cfg.targets)[:, None].expand_as(pred)
    pairs = labels[None, :].expand_as(target) != target  # original == target is no attack
    metrics = {
        "success_rate": mean((pred == target)[pairs]),
        "mean_confidence": mean(conf[pairs]),
        "mean_l2": mean(res.l2.cpu()[pairs]),
        "mean_linf": mean(res.linf.cpu()[pairs]),
        "originals": [int(i) for i in idx],
        "per_target": {
            str(t): {
                "success_rate": mean((pred[i] == t)[pairs[i]]),
                "mean_confidence": mean(conf[i][pairs[i]]),
            }
            for i, t in enumerate(cfg.targets)
        },
    }
    rows = [
        {
            "target": t,
            "original": int(labels[j]),
            "predicted": int(pred[i, j]),
            "confidence": float(conf[i, j]),
            "l2": float(res.l2[i, j]),
            "linf": float(res.linf[i, j]),
        }
        for i, t in enumerate(cfg.targets)
        for j in range(len(idx))
    ]
    figs = {
        f"targeted_images_{t}": figures.targeted_images(x0.cpu(), res, i, labels=labels)
        for i, t in enumerate(cfg.targets)
    }
    arrays = {
        "originals": x0.cpu().numpy(),
        "original_labels": labels.numpy(),
        "targets": np.asarray(cfg.targets),
        "images": res.images.cpu().numpy(),
        # A transfer set (the contract: mnistlab.transfer), scored on every model by the
        # transfer stage: the pairs whose original is not already the target, t-major.
        "transfer.targeted.images": res.images.cpu()[pairs].numpy(),  # (K, 1, 28, 28)
        "transfer.targeted.targets": target[pairs].numpy().astype(np.int64),  # (K,)
        "transfer.targeted.mode": np.array("targeted"),
    }
    return StageOutputs(metrics=metrics, rows=rows, figures=figs, arrays=arrays)
