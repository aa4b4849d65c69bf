"""Faithfulness of an attribution by deletion and insertion curves (Petsiuk et al. 2018).

Pixels are ranked by decreasing attribution (ties in raster order). *Deletion*
sets the top fraction ``f`` of pixels to ``fill``; *insertion* starts from the ``fill``
image and reveals the top fraction ``f`` of the original pixels. The fill is a value
(0 = black, MNIST's background) or an image per input, e.g. its blurred copy
(:func:`mnistlab.attribution.baselines.fill_image`): deleting to black removes the
digit's bright pixels and so rewards any map that follows the input, while a blurred
pixel keeps the image near the data (Petsiuk et al. 2018 insert into a blurred image;
Rong et al. 2022, ROAD, on how the fill leaks information). At each of
``n_steps + 1`` fractions ``f = 0, 1/n_steps, ..., 1`` the softmax probability of
class ``y`` is recorded; the area under each curve (trapezoid over ``f`` in [0, 1])
summarises it. A faithful attribution gives a *low* deletion AUC (the probability
collapses early) and a *high* insertion AUC; :func:`random_order_attribution` is the
baseline every method should beat.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from mnistlab.core.tensors import check_inputs
from mnistlab.visualize.features import placement

RANDOM_KEY = "random"  # the random pixel order (:func:`random_order_attribution`) in tables


@dataclasses.dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves of ``B`` images at ``S + 1`` fractions."""

    fractions: torch.Tensor  # (S+1,) float64, 0 .. 1: fraction of pixels deleted / inserted
    deletion: torch.Tensor  # (B, S+1) P(class y) after deleting the top fraction
    insertion: torch.Tensor  # (B, S+1) P(class y) after inserting the top fraction
    deletion_auc: torch.Tensor  # (B,) trapezoid area under each deletion curve
    insertion_auc: torch.Tensor  # (B,) trapezoid area under each insertion curve

    @property
    def mean_deletion_auc(self) -> float:
        """Mean deletion AUC over images (lower = more faithful)."""
        return float(self.deletion_auc.mean())

    @property
    def mean_insertion_auc(self) -> float:
        """Mean insertion AUC over images (higher = more faithful)."""
        return float(self.insertion_auc.mean())


def pixel_ranks(attribution: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel by decreasing attribution, ties in raster order.

    Args:
        attribution: ``(B, 1, H, W)`` (any ``(B, ...)``).

    Returns:
        ``(B, H*W)`` int64; 0 = the most important pixel.
    """
    a = attribution.detach().flatten(1).to(torch.float64)  # (B, P)
    order = torch.argsort(a, dim=1, descending=True, stable=True)  # (B, P) pixel ids
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(a.shape[1]).expand_as(order).contiguous())
    return ranks


@torch.inference_mode()
def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attribution: torch.Tensor,
    *,
    n_steps: int = 28,
    fill: float | torch.Tensor = 0.0,
    batch_size: int = 1024,
) -> Curves:
    """Deletion and insertion curves of ``attribution``, in batched forward passes.

    All ``2 * B * (n_steps + 1)`` modified images form one flat list run
    ``batch_size`` at a time; each chunk is one ``torch.where`` against the pixel ranks.

    Args:
        model: pixels ``(B, 1, 28, 28)`` -> logits ``(B, K)``; put in eval mode.
        x: pixels in [0, 1], ``(B, 1, 28, 28)``.
        y: classes to track, ``(B,)``.
        attribution: ``(B, 1, 28, 28)``; larger = more important.
        n_steps: number of fraction intervals; step ``s`` changes
            ``round(s / n_steps * 784)`` pixels.
        fill: what a deleted pixel becomes and the insertion start image: a value
            (0 = black) or a tensor shaped like ``x`` (one fill image per input).
        batch_size: images per forward pass.

    Raises:
        ValueError: ``x`` is not float ``(B, 1, H, W)``, ``y`` not ``(B,)``, ``attribution``
            or a tensor ``fill`` not shaped like ``x``, or ``n_steps`` / ``batch_size`` < 1.
    """
    check_inputs(x, y)
    if attribution.shape != x.shape:
        raise ValueError(
            f"attribution must be shaped like x {tuple(x.shape)}, got {tuple(attribution.shape)}"
        )
    if isinstance(fill, torch.Tensor) and fill.shape != x.shape:
        raise ValueError(f"fill must be shaped like x {tuple(x.shape)}, got {tuple(fill.shape)}")
    if n_steps < 1 or batch_size < 1:
        raise ValueError(f"n_steps and batch_size must be positive, got {n_steps}, {batch_size}")
    model.eval()
    dev, dtype = placement(model)
    b = len(x)
    xf = x.detach().to(dev, dtype).flatten(1)  # (B, P)
    y = y.to(dev, torch.long)
    n_pix = xf.shape[1]
    ranks = pixel_ranks(attribution).to(dev)  # (B, P)
    fractions = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)  # (S+1,)
    counts = torch.round(fractions * n_pix).long().to(dev)  # (S+1,) pixels changed per step
    if isinstance(fill, torch.Tensor):
        fill_f = fill.detach().to(dev, dtype).flatten(1)  # (B, P)
    else:
        fill_f = torch.full_like(xf, float(fill))  # (B, P)

    s1 = n_steps + 1
    total = 2 * b * s1  # flat id k = (mode * B + image) * (S+1) + step; mode 0 = deletion
    probs = torch.empty(total, dtype=torch.promote_types(dtype, torch.float32), device=dev)
    for start in range(0, total, batch_size):
        k = torch.arange(start, min(start + batch_size, total), device=dev)
        step, img, mode = k % s1, (k // s1) % b, k // (s1 * b)
        top = ranks[img] < counts[step][:, None]  # (n, P) the top fraction of pixels
        deleted = torch.where(top, fill_f[img], xf[img])
        inserted = torch.where(top, xf[img], fill_f[img])
        batch = torch.where((mode == 0)[:, None], deleted, inserted)  # (n, P)
        logits = model(batch.reshape(len(k), *x.shape[1:]))  # (n, K)
        p = logits.softmax(1, dtype=probs.dtype)
        probs[k] = p.gather(1, y[img][:, None])[:, 0]
    curves = probs.reshape(2, b, s1).cpu().to(torch.float64)
    deletion, insertion = curves[0], curves[1]  # (B, S+1) each
    return Curves(
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        deletion_auc=torch.trapezoid(deletion, fractions, dim=1),
        insertion_auc=torch.trapezoid(insertion, fractions, dim=1),
    )


def random_order_attribution(x: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """Uniform random scores like ``x`` (a random pixel order), the faithfulness baseline.

    Args:
        x: ``(B, 1, 28, 28)`` (only its shape is used).
        generator: a CPU ``torch.Generator``; the only source of randomness.

    Returns:
        ``(B, 1, 28, 28)`` float32 on CPU.
    """
    return torch.rand(x.shape, generator=generator)
