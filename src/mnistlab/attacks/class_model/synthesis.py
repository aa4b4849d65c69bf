"""Class images as in the robust-model literature (Santurkar et al. 2019, "Image synthesis
with a single (robust) classifier"): from a fixed seed, projected gradient ascent on the
class score inside an L2 ball around the seed, the same budget for every model.

The ball is what makes the comparison fair: every model may move the seed by the same
L2 distance, so a model whose gradients point along digit strokes draws a digit and one
whose gradients point along non-robust features spends the budget on faint texture.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mnistlab.attacks.common.ascent import Objective, rand, target_objective
from mnistlab.core.params_types import NUM_CLASSES
from mnistlab.core.tensors import as_pixels, frozen, model_device, per_image

CHUNK = 10_000  # training images converted to float at a time (~31 MB of pixels)


def class_means(images: Tensor, labels: Tensor, n_classes: int = NUM_CLASSES) -> Tensor:
    """The mean training digit of each class: uint8 ``(N, 28, 28)`` -> pixels ``(C, 1, 28, 28)``.

    Summed in float64 chunk by chunk (exact for any order of summation at this size, and
    no 60k-image float copy in memory).
    """
    sums = torch.zeros(n_classes, images[0].numel(), dtype=torch.float64)  # (C, 784)
    for start in range(0, len(labels), CHUNK):
        x = images[start : start + CHUNK].flatten(1).double() / 255  # (n, 784)
        sums.index_add_(0, labels[start : start + CHUNK], x)
    counts = torch.bincount(labels, minlength=n_classes).clamp_min(1)  # (C,)
    return (sums / counts[:, None]).float().view(n_classes, 1, *images.shape[1:])


def seeds(
    init: str,
    train: tuple[Tensor, Tensor],
    *,
    noise_mean: float,
    noise_std: float,
    gen: torch.Generator,
    n_classes: int = NUM_CLASSES,
) -> Tensor:
    """The starting image of each class, ``(C, 1, 28, 28)`` pixels in [0, 1].

    ``mean``: the mean training digit for every class (no class in it: whatever class
    the image ends up showing, the model drew); ``class_mean``: each class's own mean
    digit; ``noise``: ``N(noise_mean, noise_std)`` drawn from ``gen``, clamped.
    """
    images, labels = train
    if init == "class_mean":
        return class_means(images, labels, n_classes)
    if init == "mean":
        # Every image in one class: its "class mean" is the mean of all training digits.
        mean = class_means(images, torch.zeros_like(labels), 1)  # (1, 1, 28, 28)
        return mean.expand(n_classes, -1, -1, -1).clone()
    if init == "noise":
        noise = rand((n_classes, 1, *images.shape[1:]), gen, torch.device("cpu"), normal=True)
        return (noise_mean + noise_std * noise).clamp_(0, 1)
    raise ValueError(f"init: unknown seed {init!r} (mean, class_mean or noise)")


def project_l2(x: Tensor, center: Tensor, eps: float) -> Tensor:
    """``x`` ``(B, ...)`` moved onto the L2 ball of radius ``eps`` around ``center``, then
    clamped to [0, 1].

    The clamp cannot leave the ball: ``center`` lies in [0, 1], so clamping a pixel only
    brings it closer to the center's pixel.
    """
    delta = x - center
    norm = delta.flatten(1).norm(dim=1)  # (B,)
    scale = (eps / norm.clamp_min(1e-12)).clamp(max=1)  # (B,); 1 inside the ball
    return (center + delta * per_image(scale, delta)).clamp(0, 1)


def _unit(g: Tensor) -> Tensor:
    """Each sample of ``g`` ``(B, ...)`` scaled to L2 norm 1 (a zero gradient stays zero)."""
    return g / per_image(g.flatten(1).norm(dim=1).clamp_min(1e-12), g)


def l2_ball_ascent(
    seed: Tensor, objective: Objective, *, eps: float, steps: int, step_size: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Projected gradient ascent in L2 (Madry et al. 2018's PGD, maximising the class score).

    Each step moves every image by ``step_size`` along its normalised gradient, then
    projects onto the ball of radius ``eps`` around its seed and onto [0, 1].
    Normalising makes the budget the same for every model whatever its gradient's scale.

    Args:
        seed: the starting images ``(B, 1, 28, 28)``, the centres of the balls.
        objective: ``x -> (value (B,), target logit (B,), logits (B, 10))``.

    Returns:
        The final images ``(B, 1, 28, 28)``, the target logit per iteration
        ``(steps + 1, B)`` and the final logits ``(B, 10)``.
    """
    x = seed.clone()
    history = []
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            value, logit, _ = objective(x)
            (grad,) = torch.autograd.grad(value.sum(), x)
        history.append(logit.detach())
        x = project_l2(x.detach() + step_size * _unit(grad), seed, eps)
    with torch.no_grad():
        _, logit, logits = objective(x)
    history.append(logit)
    return x, torch.stack(history), logits


def synthesize(
    model: nn.Module, seed: Tensor, *, eps: float, steps: int, step_size: float, objective: str
) -> tuple[Tensor, Tensor, Tensor]:
    """One image per class ``k`` (row ``k`` of ``seed`` ``(C, 1, 28, 28)``), all classes in one
    batch: ascent on class ``k``'s ``objective`` (``ce``: log-softmax, ``logit``).

    Returns:
        As :func:`l2_ball_ascent`.
    """
    device = model_device(model)
    seed = as_pixels(seed).to(device)
    target = torch.arange(len(seed), device=device)
    with frozen(model):
        fn = target_objective(model, target, lambda v: v.new_zeros(len(v)), gain=objective)
        return l2_ball_ascent(seed, fn, eps=eps, steps=steps, step_size=step_size)
