"""Looking inside a trained CNN: conv filters, feature maps, occlusion sensitivity.

Everything here takes raw pixels in [0, 1] (the models normalise inside ``forward``)
and returns detached CPU tensors; figures live in :mod:`mnistlab.figures.visualize`.

Occlusion (Zeiler & Fergus, 2014): a ``patch`` x ``patch`` square of grey value
``fill`` slides over the image with step ``stride``; at each position the softmax
probability of the true class is recorded. Where it drops, the model was looking.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from mnistlab.config import IMAGE_SIZE
from mnistlab.evaluate import random_indices


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and float dtype of the model's first floating parameter or buffer
    (CPU float32 for a stateless model); inputs are moved to match."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities, in at least float32 (float64 models stay float64)."""
    return logits.softmax(1, dtype=torch.promote_types(logits.dtype, torch.float32))


def conv_filters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of both conv layers: ``conv1`` ``(32, 1, 3, 3)``, ``conv2`` ``(32, 32, 3, 3)``.

    Dimensions are (output channel, input channel, kernel row, kernel column).
    """
    return {name: getattr(model, name).conv.weight.detach().cpu().clone()
            for name in ("conv1", "conv2")}


@torch.inference_mode()
def activations(model: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Post-ReLU feature maps (before pooling) of one image, in eval mode.

    Args:
        model: a :class:`~mnistlab.models.MnistCNN`.
        image: float pixels in [0, 1], ``(1, 1, 28, 28)`` (or anything with 784 elements).

    Returns:
        ``{"conv1": (32, 28, 28), "conv2": (32, 14, 14)}`` on CPU, all values >= 0.
    """
    if image.numel() != IMAGE_SIZE * IMAGE_SIZE:
        raise ValueError(f"expected one 28x28 image, got shape {tuple(image.shape)}")
    model.eval()
    dev, dtype = _placement(model)
    x = image.reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE).to(dev, dtype)
    return {name: fmap[0].float().cpu() for name, fmap in model.features(x).items()}


def pick_images(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` distinct seeded random test indices (int64), the same for every model."""
    if not 0 < n <= len(labels):
        raise ValueError(f"cannot pick {n} images out of {len(labels)}")
    return random_indices(len(labels), n, seed)


# --------------------------------------------------------------------------- occlusion


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

    def rows(self, indices: torch.Tensor | None = None,
             labels: torch.Tensor | None = None) -> list[dict]:
        """One summary dict per image, e.g. for a metrics table."""
        out = []
        for k in range(len(self.maps)):
            row = {} if indices is None else {"index": int(indices[k])}
            if labels is not None:
                row["true"] = int(labels[k])
            row.update(
                predicted=int(self.base_pred[k]), base_prob=float(self.base_prob[k]),
                min_prob=float(self.min_prob[k]), min_row=int(self.argmin[k, 0]),
                min_col=int(self.argmin[k, 1]), pred_at_min=int(self.pred_at_min[k]),
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
    if images.ndim != 4 or images.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must be (N, 1, 28, 28), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float pixels in [0, 1], got {images.dtype}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must be ({len(images)},), got {tuple(labels.shape)}")


def _result(maps: torch.Tensor, preds: torch.Tensor, base_prob: torch.Tensor,
            base_pred: torch.Tensor, patch: int, stride: int, fill: float) -> OcclusionResult:
    """Summarise per-position maps ``(N, H', W')`` into an :class:`OcclusionResult`."""
    n, _, w = maps.shape
    starts = patch_starts(patch, stride)
    flat = maps.flatten(1).argmin(1)  # (N,) first minimum in row-major order
    i, j = flat // w, flat % w
    return OcclusionResult(
        maps=maps, base_prob=base_prob, min_prob=maps.flatten(1).min(1).values,
        argmin=torch.stack([starts[i], starts[j]], 1), pred_at_min=preds[torch.arange(n), i, j],
        mean_drop=base_prob - maps.mean((1, 2)), base_pred=base_pred, preds=preds,
        starts=starts, patch=patch, stride=stride, fill=float(fill),
    )


@torch.inference_mode()
def occlusion_maps(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, patch: int = 6,
    stride: int = 1, fill: float = 0.5, batch_size: int = 1024,
) -> OcclusionResult:
    """Occlusion sensitivity maps, computed in batched forward passes.

    All ``N * H' * W'`` occluded copies are enumerated as one flat list of
    (image, position) pairs and run ``batch_size`` at a time; each chunk is built
    with one ``torch.where`` against precomputed patch masks, so no copy outside the
    current chunk is ever materialised.

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
    dev, dtype = _placement(model)
    x = images.to(dev, dtype)  # (N, 1, 28, 28)
    y = labels.to(dev)
    masks = masks.reshape(p, 1, IMAGE_SIZE, IMAGE_SIZE).to(dev)  # (P, 1, 28, 28)
    fill_t = torch.tensor(float(fill), device=dev, dtype=dtype)

    base = _softmax(model(x))  # (N, 10); no more than N images at once
    base_prob, base_pred = base.gather(1, y[:, None])[:, 0], base.argmax(1)

    probs = torch.empty(n * p, device=dev, dtype=base.dtype)
    preds = torch.empty(n * p, dtype=torch.long, device=dev)
    for start in range(0, n * p, batch_size):
        k = torch.arange(start, min(start + batch_size, n * p), device=dev)  # flat pair ids
        img = k // p
        batch = torch.where(masks[k % p], fill_t, x[img])  # (B, 1, 28, 28)
        out = _softmax(model(batch))  # (B, 10)
        probs[k] = out.gather(1, y[img][:, None])[:, 0]
        preds[k] = out.argmax(1)
    return _result(probs.reshape(n, h, w).cpu(), preds.reshape(n, h, w).cpu(),
                   base_prob.cpu(), base_pred.cpu(), patch, stride, fill)


@torch.inference_mode()
def occlusion_maps_naive(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, patch: int = 6,
    stride: int = 1, fill: float = 0.5,
) -> OcclusionResult:
    """Reference implementation of :func:`occlusion_maps`: one forward pass per position
    per image, painting the patch by slicing. Slow; kept for tests and benchmarks."""
    _check_inputs(images, labels)
    starts = patch_starts(patch, stride).tolist()
    h = w = len(starts)
    n = len(images)
    model.eval()
    dev, dtype = _placement(model)
    prob_dtype = torch.promote_types(dtype, torch.float32)
    maps = torch.empty(n, h, w, dtype=prob_dtype)
    preds = torch.empty(n, h, w, dtype=torch.long)
    base_prob = torch.empty(n, dtype=prob_dtype)
    base_pred = torch.empty(n, dtype=torch.long)
    for k in range(n):
        x = images[k : k + 1].to(dev, dtype)  # (1, 1, 28, 28)
        label = int(labels[k])
        out = _softmax(model(x))[0]
        base_prob[k], base_pred[k] = out[label].item(), out.argmax().item()
        for i, r in enumerate(starts):
            for j, c in enumerate(starts):
                occluded = x.clone()
                occluded[..., r : r + patch, c : c + patch] = fill
                out = _softmax(model(occluded))[0]
                maps[k, i, j], preds[k, i, j] = out[label].item(), out.argmax().item()
    return _result(maps, preds, base_prob, base_pred, patch, stride, fill)
