"""Class model visualisation (report figs. 12-13): images grown from noise into each class."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from mnistlab.attacks.common.ascent import adam_ascent, rand, sq_norm, target_objective
from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.selection import mean
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.params_types import NUM_CLASSES
from mnistlab.core.tensors import frozen, generator, model_device


@dataclasses.dataclass
class ClassModelResult:
    """Class model visualisation: one image grown from noise per class."""

    images: Tensor  # (C, 1, 28, 28) pixels in [0, 1]; row k is grown for class k
    cost: Tensor  # (steps + 1, C) logit of class k for image k, per iteration
    predicted: Tensor  # (C,) argmax class of each image
    confidence: Tensor  # (C,) softmax probability of class k for image k
    probs: Tensor  # (C, 10) softmax of each image

    @property
    def success_rate(self) -> float:
        target = torch.arange(len(self.predicted), device=self.predicted.device)
        return float((self.predicted == target).float().mean())


def class_model(
    model: nn.Module,
    *,
    steps: int,
    lr: float,
    l2: float,
    init_mean: float,
    init_std: float,
    gen: torch.Generator | int,
    n_classes: int = NUM_CLASSES,
) -> ClassModelResult:
    """Grow an image per class that maximises its pre-softmax logit (Simonyan et al. 2013).

    From seeded Gaussian noise ``N(init_mean, init_std)`` clamped to [0, 1], every
    class's image is optimised in one batch by gradient ascent (Adam) on
    ``logit_k(x) - l2 * ||x||^2``, clamped to [0, 1] after every step.

    Args:
        steps: Adam iterations.
        lr: Adam step size, in pixel units.
        l2: weight of the squared L2 norm of the image.
        gen: a generator (or seed) for the starting noise.
    """
    device = model_device(model)
    noise = rand((n_classes, 1, 28, 28), generator(gen), device, normal=True)
    x = (init_mean + init_std * noise).clamp_(0, 1)  # (C, 1, 28, 28)
    target = torch.arange(n_classes, device=device)
    with frozen(model):
        objective = target_objective(model, target, lambda v: l2 * sq_norm(v))
        cost, logits = adam_ascent(x, objective, steps, lr, lambda v: v.clamp_(0, 1))
    probs = logits.softmax(1)
    return ClassModelResult(
        images=x.detach(),
        cost=cost,
        predicted=probs.argmax(1),
        confidence=probs[target, target],
        probs=probs,
    )


def compute(inp: AttackInputs) -> StageOutputs:
    """The ``attack@class_model-<model>`` stage: one image grown per class, and its cost."""
    model, params, gen = inp.model, inp.params, inp.gen
    from mnistlab.attacks.class_model import figures

    cfg = params.attacks.class_model
    res = class_model(
        model,
        steps=cfg.steps,
        lr=cfg.lr,
        l2=cfg.l2,
        init_mean=cfg.init_mean,
        init_std=cfg.init_std,
        gen=gen,
    )
    targets = torch.arange(len(res.predicted))
    metrics = {
        "success_rate": mean(res.predicted.cpu() == targets),
        "mean_confidence": mean(res.confidence),
        "confidence": [float(c) for c in res.confidence],
        "predicted": [int(p) for p in res.predicted],
    }
    cost = res.cost.cpu()
    rows = [
        {"iteration": i, **{f"class_{k}": float(cost[i, k]) for k in range(cost.shape[1])}}
        for i in range(cost.shape[0])
    ]
    return StageOutputs(
        metrics=metrics,
        rows=rows,
        figures={"class_images": figures.class_images(res), "class_cost": figures.class_cost(res)},
        arrays={"images": res.images.cpu().numpy(), "predicted": res.predicted.cpu().numpy()},
    )
