"""Tensor helpers every torch-using stage shares: seeds, pixels, batching, prediction.

MNIST stays a uint8 tensor in memory; :func:`to_pixels` turns a batch of it into
float pixels in [0, 1] shaped ``(B, 1, 28, 28)``, the one input format of every model.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def set_seeds(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def to_pixels(images: Tensor, *, channels_last: bool = False) -> Tensor:
    """uint8 ``(B, 28, 28)`` -> float ``(B, 1, 28, 28)`` pixels in [0, 1]."""
    x = images.unsqueeze(1).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def as_pixels(images: Tensor) -> Tensor:
    """uint8 ``(N, 28, 28)`` or pixels ``(N, 1, 28, 28)`` -> float pixels ``(N, 1, 28, 28)``."""
    return to_pixels(images) if images.dtype == torch.uint8 else images.float()


def check_inputs(
    x: Tensor,
    y: Tensor,
    *,
    size: int | None = None,
    names: tuple[str, str] = ("x", "y"),
    batch: str = "B",
) -> None:
    """Check a batch of float pixels ``x`` ``(B, 1, H, W)`` and its classes ``y`` ``(B,)``.

    Args:
        x: float pixels in [0, 1], ``(B, 1, H, W)``.
        y: one class per image, ``(B,)``.
        size: the required ``H`` and ``W`` (None: any).
        names: what the error messages call ``x`` and ``y``.
        batch: what the error messages call ``B``.

    Raises:
        ValueError: ``x`` is not ``(B, 1, H, W)`` (``H = W = size`` when given) or not
            floating point, or ``y`` is not ``(B,)``.
    """
    x_name, y_name = names
    side = "H, W" if size is None else f"{size}, {size}"
    if x.ndim != 4 or x.shape[1] != 1 or (size is not None and x.shape[2:] != (size, size)):
        raise ValueError(f"{x_name} must be ({batch}, 1, {side}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{x_name} must be float pixels in [0, 1], got {x.dtype}")
    if y.shape != (len(x),):
        raise ValueError(f"{y_name} must be ({len(x)},), got {tuple(y.shape)}")


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` covering ``range(n)``."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def generator(seed: torch.Generator | int) -> torch.Generator:
    """A CPU generator for an int seed; a generator passes through."""
    return torch.Generator().manual_seed(seed) if isinstance(seed, int) else seed


def random_indices(n_total: int, n: int, seed: int) -> Tensor:
    """``n`` distinct seeded random indices (the same for every model given a seed)."""
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter; both restored on exit."""
    training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(training)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    return next(model.parameters(), torch.empty(0)).device


# Forward passes of the study's CNN run fastest in batches of 128-256 on the CPU: 2x the
# images/s of batches of 1000, whose activations spill out of the cache (BENCHMARKS.md).
PREDICT_BATCH = 256


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, *, batch_size: int = PREDICT_BATCH) -> Tensor:
    """Predicted classes ``(N,)`` for pixels ``x`` ``(N, 1, 28, 28)``, in eval mode."""
    with frozen(model):
        out = [model(x[s]).argmax(1) for s in batches(len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: Tensor,
    *,
    batch_size: int = PREDICT_BATCH,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
) -> Tensor:
    """Logits ``(N, 10)`` for uint8 images, in eval mode, returned on the CPU."""
    model.eval()
    out = [
        model(to_pixels(images[s].to(device), channels_last=channels_last)).float().cpu()
        for s in batches(len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, 10)


def loss_and_accuracy(logits: Tensor, labels: Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``logits`` ``(N, 10)`` against ``labels``."""
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).sum().item() / max(len(labels), 1)
    return loss, acc


# ---------------------------------------------------------------- L-inf balls, per image


def as_eps(eps: float | Tensor, n: int, device: torch.device) -> Tensor:
    """A radius per image: float or ``(N,)`` (or 0-d) tensor -> float32 ``(N,)`` on ``device``."""
    e = torch.as_tensor(eps, dtype=torch.float32, device=device)
    if e.dim() == 0:
        e = e.expand(n)
    if e.shape != (n,):
        raise ValueError(f"eps must be a float or a ({n},) tensor, got shape {tuple(e.shape)}")
    if bool((e < 0).any()) or not bool(torch.isfinite(e).all()):
        raise ValueError("eps must be finite and >= 0")
    return e.clone()


def per_image(v: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` -> ``(B, 1, ..., 1)`` broadcastable against ``like`` ``(B, ...)``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
    """Onto the L-inf ball of radius ``eps`` around ``x``, then onto [0, 1].

    Args:
        adv, x: ``(B, 1, 28, 28)``.
        eps: a float, or ``(B, 1, 1, 1)`` (anything broadcastable against ``x``).
    """
    return torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp_(0, 1)


def uniform_start(x: Tensor, eps: Tensor, gen: torch.Generator) -> Tensor:
    """A uniform point of the eps-ball around ``x`` (``eps`` ``(B,)``), clamped to [0, 1].

    The noise is drawn for all ``B`` images at once, so each image's start does not
    depend on which other images are attacked later.
    """
    noise = torch.rand(x.shape, generator=gen, device=gen.device).to(x.device)
    delta = (2 * noise - 1) * per_image(eps, x)
    return (x + delta).clamp_(0, 1)
