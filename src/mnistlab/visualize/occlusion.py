"""Occlusion sensitivity (Zeiler & Fergus, 2014; the report's question 4).

A ``patch`` x ``patch`` square of grey value ``fill`` slides over the image with step
``stride``; at each position the softmax probability of the true class is recorded.
Where it drops, the model was looking.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from mnistlab.core.params_types import IMAGE_SIZE
from mnistlab.core.tensors import check_inputs
from mnistlab.visualize.features import placement, softmax


@dataclasses.dataclass(frozen=True)
class OcclusionResult:
    """Occlusion sensitivity of ``N`` images; ``H' = W' = (28 - patch) // stride + 1``.

    Map cell ``(i, j)`` holds the true-class probability with the patch's top-left
    corner at pixel ``(starts[i], starts[j])``.
    """

    maps: torch.Tensor  # (N, H', W') true-class probability per patch position
    base_prob: torch.Tensor  # (N,) true-class probability of the unoccluded image
    min_prob: torch.Tensor  # (N,) lowest value of each map
    argmin: torch.Tensor  # (N, 2) int64 (row, col) pixel of the worst patch's top-left corner
    pred_at_min: torch.Tensor  # (N,) int64 class predicted with the patch at the worst position
    mean_drop: torch.Tensor  # (N,) base_prob - maps.mean((1, 2))
    base_pred: torch.Tensor  # (N,) int64 class predicted for the unoccluded image
    preds: torch.Tensor  # (N, H', W') int64 class predicted at every patch position
    starts: torch.Tensor  # (H',) int64 top-left pixel offsets of the patch, both axes
    patch: int
    stride: int
    fill: float
    # The true class's logit keeps moving where the probability saturates at ~1.
    logits: torch.Tensor | None = None  # (N, H', W') true-class logit per patch position
    base_logit: torch.Tensor | None = None  # (N,) true-class logit of the unoccluded image

    @property
    def logit_drop(self) -> torch.Tensor:
        """``(N, H', W')`` drop of the true-class logit, ``base_logit - logits``."""
        if self.logits is None or self.base_logit is None:
            raise ValueError("this result holds no logits")
        return self.base_logit[:, None, None] - self.logits

    def rows(
        self, indices: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> list[dict]:
        """One summary dict per image, e.g. for a metrics table."""
        out = []
        for k in range(len(self.maps)):
            row = {} if indices is None else {"index": int(indices[k])}
            if labels is not None:
                row["true"] = int(labels[k])
            row.update(
                predicted=int(self.base_pred[k]),
                base_prob=float(self.base_prob[k]),
                min_prob=float(self.min_prob[k]),
                min_row=int(self.argmin[k, 0]),
                min_col=int(self.argmin[k, 1]),
                pred_at_min=int(self.pred_at_min[k]),
                mean_drop=float(self.mean_drop[k]),
            )
            out.append(row)
        return out


def patch_starts(patch: int, stride: int, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Top-left offsets ``0, stride, ...`` up to ``size - patch`` inclusive.

    Raises:
        ValueError: ``patch`` or ``stride`` is not positive, or ``patch > size``.
    """
    if patch < 1 or stride < 1:
        raise ValueError(f"patch and stride must be positive, got patch={patch} stride={stride}")
    if patch > size:
        raise ValueError(f"patch {patch} is larger than the {size}x{size} image")
    return torch.arange(0, size - patch + 1, stride)


def occlusion_masks(patch: int, stride: int, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Boolean masks ``(H', W', size, size)``, True where the patch at ``(i, j)`` covers."""
    starts = patch_starts(patch, stride, size)  # (H',)
    pix = torch.arange(size)
    inside = (pix >= starts[:, None]) & (pix < starts[:, None] + patch)  # (H', size)
    return inside[:, None, :, None] & inside[None, :, None, :]  # (H', W', size, size)


def _check_inputs(images: torch.Tensor, labels: torch.Tensor) -> None:
    """Float pixels ``(N, 1, 28, 28)`` and labels ``(N,)``, else ``ValueError``."""
    check_inputs(images, labels, size=IMAGE_SIZE, names=("images", "labels"), batch="N")


def _result(
    maps: torch.Tensor,
    preds: torch.Tensor,
    base_prob: torch.Tensor,
    base_pred: torch.Tensor,
    patch: int,
    stride: int,
    fill: float,
    logits: torch.Tensor | None = None,
    base_logit: torch.Tensor | None = None,
) -> OcclusionResult:
    """Summarise per-position maps ``(N, H', W')`` into an :class:`OcclusionResult`."""
    n, _, w = maps.shape
    starts = patch_starts(patch, stride)
    flat = maps.flatten(1).argmin(1)  # (N,) first minimum in row-major order
    i, j = flat // w, flat % w
    return OcclusionResult(
        maps=maps,
        base_prob=base_prob,
        min_prob=maps.flatten(1).min(1).values,
        argmin=torch.stack([starts[i], starts[j]], 1),
        pred_at_min=preds[torch.arange(n), i, j],
        mean_drop=base_prob - maps.mean((1, 2)),
        base_pred=base_pred,
        preds=preds,
        starts=starts,
        patch=patch,
        stride=stride,
        fill=float(fill),
        logits=logits,
        base_logit=base_logit,
    )


@torch.inference_mode()
def occlusion_maps(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    patch: int = 6,
    stride: int = 1,
    fill: float = 0.5,
    batch_size: int = 1024,
) -> OcclusionResult:
    """Occlusion sensitivity maps, computed in batched forward passes.

    All ``N * H' * W'`` occluded copies are enumerated as one flat list of
    (image, position) pairs and run ``batch_size`` at a time; each chunk is built
    with one ``torch.where`` against precomputed patch masks, so no copy outside the
    current chunk is ever materialised. The passes run on a ``channels_last`` copy of
    the model (the model itself is untouched): measured about 2x faster on the CPU.

    Args:
        model: maps float pixels ``(B, 1, 28, 28)`` to logits ``(B, 10)``; put in eval mode.
        images: float pixels in [0, 1], ``(N, 1, 28, 28)``.
        labels: true classes ``(N,)``.
        patch: side of the square patch in pixels, 1..28.
        stride: step between patch positions in pixels.
        fill: pixel value painted into the patch.
        batch_size: occluded images per forward pass.

    Raises:
        ValueError: bad shapes, ``patch > 28``, or a non-positive patch/stride/batch size.
    """
    _check_inputs(images, labels)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    masks = occlusion_masks(patch, stride)  # (H', W', 28, 28)
    h, w = masks.shape[:2]
    n, p = len(images), h * w
    model.eval()
    dev, dtype = placement(model)
    cl = torch.channels_last
    net = copy.deepcopy(model).to(memory_format=cl)
    x = images.to(dev, dtype)  # (N, 1, 28, 28)
    y = labels.to(dev)
    masks = masks.reshape(p, 1, IMAGE_SIZE, IMAGE_SIZE).to(dev)  # (P, 1, 28, 28)
    fill_t = torch.tensor(float(fill), device=dev, dtype=dtype)

    base_logits = net(x.contiguous(memory_format=cl))  # (N, 10); no more than N at once
    base = softmax(base_logits)
    base_prob, base_pred = base.gather(1, y[:, None])[:, 0], base.argmax(1)

    probs = torch.empty(n * p, device=dev, dtype=base.dtype)
    logits = torch.empty(n * p, device=dev, dtype=base.dtype)
    preds = torch.empty(n * p, dtype=torch.long, device=dev)
    for start in range(0, n * p, batch_size):
        k = torch.arange(start, min(start + batch_size, n * p), device=dev)  # flat pair ids
        img = k // p
        batch = torch.where(masks[k % p], fill_t, x[img])  # (B, 1, 28, 28)
        out = net(batch.contiguous(memory_format=cl)).to(base.dtype)  # (B, 10) logits
        logits[k] = out.gather(1, y[img][:, None])[:, 0]
        probs[k] = softmax(out).gather(1, y[img][:, None])[:, 0]
        preds[k] = out.argmax(1)
    return _result(
        probs.reshape(n, h, w).cpu(),
        preds.reshape(n, h, w).cpu(),
        base_prob.cpu(),
        base_pred.cpu(),
        patch,
        stride,
        fill,
        logits=logits.reshape(n, h, w).cpu(),
        base_logit=base_logits.gather(1, y[:, None])[:, 0].to(base.dtype).cpu(),
    )


@torch.inference_mode()
def occlusion_maps_naive(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    patch: int = 6,
    stride: int = 1,
    fill: float = 0.5,
) -> OcclusionResult:
    """Reference implementation of :func:`occlusion_maps`: one forward pass per position
    per image, painting the patch by slicing. Slow; kept for tests and benchmarks."""
    _check_inputs(images, labels)
    starts = patch_starts(patch, stride).tolist()
    h = w = len(starts)
    n = len(images)
    model.eval()
    dev, dtype = placement(model)
    prob_dtype = torch.promote_types(dtype, torch.float32)
    maps = torch.empty(n, h, w, dtype=prob_dtype)
    preds = torch.empty(n, h, w, dtype=torch.long)
    base_prob = torch.empty(n, dtype=prob_dtype)
    base_pred = torch.empty(n, dtype=torch.long)
    for k in range(n):
        x = images[k : k + 1].to(dev, dtype)  # (1, 1, 28, 28)
        label = int(labels[k])
        out = softmax(model(x))[0]
        base_prob[k], base_pred[k] = out[label].item(), out.argmax().item()
        for i, r in enumerate(starts):
            for j, c in enumerate(starts):
                occluded = x.clone()
                occluded[..., r : r + patch, c : c + patch] = fill
                out = softmax(model(occluded))[0]
                maps[k, i, j], preds[k, i, j] = out[label].item(), out.argmax().item()
    return _result(maps, preds, base_prob, base_pred, patch, stride, fill)
