"""Class model visualisation (report figs. 12-13): images grown from noise into each class;
and class images as in the robust-model literature (:mod:`.synthesis`), both judged by
real training digits (:mod:`.judges`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor, nn

from mnistlab.attacks.class_model.judges import judge, summary
from mnistlab.attacks.class_model.synthesis import seeds, synthesize
from mnistlab.attacks.common.ascent import adam_ascent, rand, sq_norm, target_objective
from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.selection import mean
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.params_types import NUM_CLASSES
from mnistlab.core.tensors import frozen, generator, model_device

# The stage gives this form the training split: its seeds and judges need real digits.
USES_TRAIN = True


@dataclasses.dataclass
class ClassModelResult:
    """Class images: one per class, grown from noise or from a seed."""

    images: Tensor  # (C, 1, 28, 28) pixels in [0, 1]; row k is grown for class k
    cost: Tensor  # (steps + 1, C) logit of class k for image k, before each step and at the end
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
    return _result(x, cost, logits)


def _result(images: Tensor, cost: Tensor, logits: Tensor) -> ClassModelResult:
    probs = logits.softmax(1)  # (C, 10)
    target = torch.arange(len(probs), device=probs.device)
    return ClassModelResult(
        images=images.detach(),
        cost=cost,
        predicted=probs.argmax(1),
        confidence=probs[target, target],
        probs=probs,
    )


def _read(res: ClassModelResult) -> dict[str, float | list]:
    """What the attacked model itself says of its class images."""
    targets = torch.arange(len(res.predicted))
    return {
        "success_rate": mean(res.predicted.cpu() == targets),
        "mean_confidence": mean(res.confidence),
        "confidence": [float(c) for c in res.confidence],
        "predicted": [int(p) for p in res.predicted],
    }


def compute(inp: AttackInputs) -> StageOutputs:
    """The ``attack@class_model-<model>`` stage: one image grown per class from noise (the
    report's), one per class from a fixed seed inside an L2 ball (the literature's), and
    what the training digits say of both."""
    from mnistlab.attacks.class_model import figures

    model, params, gen = inp.model, inp.params, inp.gen
    if inp.train is None:
        raise ValueError("class_model needs the training split (AttackInputs.train)")
    cfg, syn = params.attacks.class_model, params.attacks.class_model.synthesis
    res = class_model(
        model,
        steps=cfg.steps,
        lr=cfg.lr,
        l2=cfg.l2,
        init_mean=cfg.init_mean,
        init_std=cfg.init_std,
        gen=gen,
    )
    # Drawn after the noise start above, so the report's images are as before.
    seed = seeds(syn.init, inp.train, noise_mean=cfg.init_mean, noise_std=cfg.init_std, gen=gen)
    images, cost, logits = synthesize(
        model,
        seed,
        eps=syn.eps_l2,
        steps=syn.steps,
        step_size=syn.step_size,
        objective=syn.objective,
    )
    seeded = _result(images, cost, logits)
    # The three image sets in one pass over the training digits: (3C, 1, 28, 28).
    judged = torch.cat([res.images.cpu(), seeded.images.cpu(), seed])
    intended = torch.arange(len(seed)).repeat(3)  # image k of each set is made for class k
    grown_j, seeded_j, seed_j = judge(judged, intended, inp.train, k=cfg.knn_k).split(len(seed))
    moved = (seeded.images.cpu() - seed).flatten(1).norm(dim=1)  # (C,) L2 from the seed
    metrics = {
        **_read(res),
        **{k: v for k, v in summary(grown_j).items() if k in ("knn_accuracy", "nearest_l2")},
        "seeded": {
            **_read(seeded),
            **summary(seeded_j),
            "moved_l2": float(moved.mean()),
            "seed_knn_accuracy": summary(seed_j)["knn_accuracy"],
            "seed_nearest_l2": summary(seed_j)["nearest_l2"],
        },
    }
    cost = res.cost.cpu()
    rows = [
        {"iteration": i, **{f"class_{k}": float(cost[i, k]) for k in range(cost.shape[1])}}
        for i in range(cost.shape[0])
    ]
    arrays = {
        "images": res.images.cpu().numpy(),  # (C, 1, 28, 28) grown from noise
        "predicted": res.predicted.cpu().numpy(),
        "knn_class": grown_j.knn_class.numpy(),  # (C,)
        "nearest_l2": grown_j.nearest_l2.numpy(),  # (C,)
        "seeded_images": seeded.images.cpu().numpy(),  # (C, 1, 28, 28) from the seed
        "seeded_predicted": seeded.predicted.cpu().numpy(),
        "seeded_knn_class": seeded_j.knn_class.numpy(),
        "seeded_nearest_l2": seeded_j.nearest_l2.numpy(),
        "seeds": seed.numpy(),  # (C, 1, 28, 28)
        "seed_knn_class": seed_j.knn_class.numpy(),
        "seed_nearest_l2": seed_j.nearest_l2.numpy(),
        # Two transfer sets (the contract: mnistlab.transfer), scored on every model by the
        # transfer stage: image k of each is made for class k, a success is reading k.
        "transfer.class_model.images": res.images.cpu().numpy(),  # (C, 1, 28, 28)
        "transfer.class_model.targets": np.arange(len(res.images), dtype=np.int64),  # (C,)
        "transfer.class_model.mode": np.array("targeted"),
        "transfer.class_model_seeded.images": seeded.images.cpu().numpy(),  # (C, 1, 28, 28)
        "transfer.class_model_seeded.targets": np.arange(len(seeded.images), dtype=np.int64),
        "transfer.class_model_seeded.mode": np.array("targeted"),
    }
    return StageOutputs(
        metrics=metrics,
        rows=rows,
        figures={"class_images": figures.class_images(res), "class_cost": figures.class_cost(res)},
        arrays=arrays,
    )
