"""Learned adversarial noise (report figs. 17-20) and how it transfers to other images."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mnistlab.attacks.common.ascent import adam_ascent, sq_norm, target_objective
from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.selection import mean, originals, pick_transfer_images
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.tensors import as_pixels, frozen, predict


@dataclasses.dataclass
class NoiseResult:
    """Learned additive noise, one per (original, target) pair."""

    targets: Tensor  # (P,)
    noise: Tensor  # (P, 1, 28, 28); x0 + noise stays in [0, 1]
    images: Tensor  # (P, 1, 28, 28) clamp(x0 + noise, 0, 1)
    cost: Tensor  # (steps + 1, P) target logit per iteration
    predicted: Tensor  # (P,)
    confidence: Tensor  # (P,) softmax probability of the target
    noise_l2: Tensor  # (P,) L2 norm of the noise

    @property
    def success(self) -> Tensor:
        return self.predicted == self.targets

    def subset(self, index: slice | Tensor | Sequence[int]) -> NoiseResult:
        """The pairs selected by ``index`` (a slice, indices or a bool mask)."""
        cost = self.cost[:, index]
        fields = {
            f.name: getattr(self, f.name)[index]
            for f in dataclasses.fields(self)
            if f.name != "cost"
        }
        return NoiseResult(cost=cost, **fields)


def learn_noise(
    model: nn.Module,
    originals: Tensor,
    targets: Tensor,
    *,
    steps: int,
    lr: float,
    penalty: float,
    objective: str = "logit",
) -> NoiseResult:
    """Learn an additive noise per (original, target) pair, all pairs in one batch.

    Maximises ``logit_target(clamp(x0 + N, 0, 1)) - penalty * ||N||^2`` (``objective=
    "logit"``) or ``-cross_entropy(...) - penalty * ||N||^2`` (``"ce"``) with Adam
    from ``N = 0``. After every step ``N`` is projected onto ``[-x0, 1 - x0]``, so the
    clamp is the identity and ``||N||`` is the real perturbation.

    Args:
        originals: ``(P, 1, 28, 28)`` pixels in [0, 1].
        targets: ``(P,)`` target class of each pair.
        steps: Adam iterations.
        lr: Adam step size, in pixel units.
        penalty: weight of the squared L2 norm of the noise.
        objective: ``"logit"`` (the report's) or ``"ce"``.
    """
    if objective not in ("logit", "ce"):
        raise ValueError(f"objective must be 'logit' or 'ce', got {objective!r}")
    x0 = originals.detach()
    targets = torch.as_tensor(targets, device=x0.device)
    noise = torch.zeros_like(x0)
    low, high = -x0, 1 - x0

    # The projection keeps x0 + N in [0, 1], so the forward needs no clamp (whose
    # gradient is zero at the bounds, where most MNIST pixels sit: it would freeze them).
    with frozen(model):
        fn = target_objective(
            model, targets, lambda v: penalty * sq_norm(v), lambda v: x0 + v, objective
        )
        cost, logits = adam_ascent(noise, fn, steps, lr, lambda v: torch.clamp(v, low, high, out=v))
    probs = logits.softmax(1)
    rows = torch.arange(len(x0), device=x0.device)
    noise = noise.detach()
    return NoiseResult(
        targets=targets,
        noise=noise,
        images=(x0 + noise).clamp(0, 1),
        cost=cost,
        predicted=probs.argmax(1),
        confidence=probs[rows, targets],
        noise_l2=sq_norm(noise).sqrt(),
    )


@torch.no_grad()
def apply_noise(
    model: nn.Module, images: Tensor, noise: Tensor, *, batch_size: int = 1000
) -> Tensor:
    """Apply every noise to every image (clamped to [0, 1]) and classify.

    Args:
        images: ``(M, 1, 28, 28)`` pixels in [0, 1].
        noise: ``(K, 1, 28, 28)``.

    Returns:
        ``(M, K)`` predicted classes of ``clamp(images[m] + noise[k], 0, 1)``.
    """
    m, k = len(images), len(noise)
    x = (images[:, None] + noise[None].to(images.device)).clamp_(0, 1)  # (M, K, 1, 28, 28)
    return predict(model, x.flatten(0, 1), batch_size=batch_size).view(m, k)


def compute(inp: AttackInputs) -> StageOutputs:
    """The ``attack@noise-<model>`` stage: the report's noise pair sets and their transfer."""
    model, test, params, device = inp.model, inp.test, inp.params, inp.device
    from mnistlab.attacks.noise import figures

    cfg = params.attacks.noise
    idx, x0 = originals(model, test, seed=params.seed, device=device)
    # The report's pair sets: every class -> `target`; each of `originals` -> every class.
    # The transfer source's set is learned too when it is not among them.
    sets = {f"to_{cfg.target}": (list(range(10)), [cfg.target] * 10)}
    for o in dict.fromkeys([*cfg.originals, cfg.transfer_original]):
        sets[f"from_{o}"] = ([o] * 10, list(range(10)))
    src = torch.tensor([c for orig, _ in sets.values() for c in orig])
    dst = torch.tensor([t for _, tgt in sets.values() for t in tgt])
    res = learn_noise(
        model,
        x0[src],
        dst.to(device),
        steps=cfg.steps,
        lr=cfg.lr,
        penalty=cfg.penalty,
        objective=cfg.objective,
    )
    hit = res.predicted.cpu() == dst
    real = src != dst  # a class "attacked" into itself is no attack
    reported = torch.tensor(
        [
            name != f"from_{cfg.transfer_original}" or cfg.transfer_original in cfg.originals
            for name in sets
            for _ in range(10)
        ]
    )
    chunks = {name: slice(i * 10, (i + 1) * 10) for i, name in enumerate(sets)}

    # Transfer (report fig. 20): the ten noises learned on one image of class
    # `transfer_original` applied to other seeded test images, of that class and others.
    images, labels = test
    t_idx = pick_transfer_images(
        images,
        labels,
        source=cfg.transfer_original,
        n_same=cfg.n_transfer_same,
        n_other=cfg.n_transfer_other,
        seed=params.seed,
        models=[model],
        exclude_indices=idx.tolist(),
    )
    t_x, t_y = as_pixels(images[t_idx]).to(device), labels[t_idx]
    t_noise = res.noise[chunks[f"from_{cfg.transfer_original}"]]
    table = apply_noise(model, t_x, t_noise).cpu()  # (images, noise for target k)
    rates = transfer_rates(table, t_y, cfg.transfer_original)

    keep = real & reported
    metrics = {
        "success_rate": mean(hit[keep]),
        "mean_confidence": mean(res.confidence.cpu()[keep]),
        "mean_noise_l2": mean(res.noise_l2.cpu()[keep]),
        "per_set": {name: mean(hit[sl][real[sl]]) for name, sl in chunks.items()},
        "transfer": {
            **rates,
            "images": [int(i) for i in t_idx],
            "labels": [int(y) for y in t_y],
            "predicted": table.tolist(),
        },
        "originals": [int(i) for i in idx],
    }
    rows = [
        {
            "image": int(t_idx[r]),
            "label": int(t_y[r]),
            "noise_target": k,
            "predicted": int(table[r, k]),
        }
        for r in range(len(t_idx))
        for k in range(10)
    ]
    figs = {
        f"noise_{name}": figures.noise_images(
            x0[src[sl]].cpu(), res.subset(sl), f"learned noise, {name.replace('_', ' ')}"
        )
        for name, sl in chunks.items()
    }
    figs["noise_transfer"] = figures.transfer_table(t_x.cpu(), t_y, table, torch.arange(10))
    arrays = {
        "originals": x0[src].cpu().numpy(),
        "sources": src.numpy(),
        "targets": dst.numpy(),
        "noise": res.noise.cpu().numpy(),
        "images": res.images.cpu().numpy(),
        # A transfer set (the contract: mnistlab.transfer), scored on every model by the
        # transfer stage: every pair learned (reported or not) whose source is not its target.
        "transfer.noise.images": res.images.cpu()[real].numpy(),  # (K, 1, 28, 28)
        "transfer.noise.targets": dst[real].numpy().astype(np.int64),  # (K,)
        "transfer.noise.mode": np.array("targeted"),
    }
    return StageOutputs(metrics=metrics, rows=rows, figures=figs, arrays=arrays)


def transfer_rates(table: Tensor, labels: Tensor, source: int) -> dict[str, float]:
    """How often noise learned on one image of class ``source`` moves other images.

    Args:
        table: ``(M, K)`` predicted class of image ``m`` plus the noise for target ``k``.
        labels: ``(M,)`` true classes of the images.

    Returns:
        ``same_class_rate`` (images of class ``source``) and ``other_class_rate`` (the
        rest): the fraction of (image, noise) pairs predicted as the noise's target,
        leaving out pairs whose image is already of that class (they say nothing).
    """
    noise_targets = torch.arange(table.shape[1])
    to_target = table == noise_targets[None, :]
    informative = labels[:, None] != noise_targets[None, :]
    same = (labels == source)[:, None]
    return {
        "same_class_rate": mean(to_target[informative & same]),
        "other_class_rate": mean(to_target[informative & ~same]),
    }
