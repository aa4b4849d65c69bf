"""Conv filters and feature maps of a trained CNN (the report's figures 7-10).

Everything takes raw pixels in [0, 1] (the models normalise inside ``forward``) and
returns detached CPU tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistlab.core.params_types import IMAGE_SIZE
from mnistlab.core.tensors import random_indices


def placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and float dtype of the model's first floating parameter or buffer
    (CPU float32 for a stateless model); inputs are moved to match."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities, in at least float32 (float64 models stay float64)."""
    return logits.softmax(1, dtype=torch.promote_types(logits.dtype, torch.float32))


def conv_filters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of both conv layers: ``conv1`` ``(32, 1, 3, 3)``, ``conv2`` ``(32, 32, 3, 3)``.

    Dimensions are (output channel, input channel, kernel row, kernel column).
    """
    return {
        name: getattr(model, name).conv.weight.detach().cpu().clone() for name in ("conv1", "conv2")
    }


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
    dev, dtype = placement(model)
    x = image.reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE).to(dev, dtype)
    return {name: fmap[0].float().cpu() for name, fmap in model.features(x).items()}


def pick_images(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` distinct seeded random test indices (int64), the same for every model."""
    if not 0 < n <= len(labels):
        raise ValueError(f"cannot pick {n} images out of {len(labels)}")
    return random_indices(len(labels), n, seed)
