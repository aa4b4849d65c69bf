"""Conv filters and feature maps of a trained model (the report's figures 7-10).

Any classifier of ``(B, 1, 28, 28)`` pixels works: its conv layers are found by walking
the model (:mod:`mnistlab.core.layers`) and named ``conv1``, ``conv2``, ... in
forward order, the same names for every CNN whatever it calls its modules; a model
without a conv layer has no filters and no feature maps (empty dicts). Everything takes
raw pixels in [0, 1] (the models normalise inside ``forward``) and returns detached CPU
tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistlab.core.layers import conv_layers, placement, rectified_outputs
from mnistlab.core.params_types import IMAGE_SIZE
from mnistlab.core.tensors import random_indices

__all__ = ["activations", "conv_filters", "pick_images", "placement", "softmax"]


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities, in at least float32 (float64 models stay float64)."""
    return logits.softmax(1, dtype=torch.promote_types(logits.dtype, torch.float32))


def conv_filters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of every conv layer, ``{"conv1": (C1, 1, k, k), "conv2": (C2, C1, k, k), ...}``.

    Dimensions are (output channel, input channel, kernel row, kernel column). For
    ``MnistCNN``: ``conv1`` ``(32, 1, 3, 3)``, ``conv2`` ``(32, 32, 3, 3)``.
    """
    return {name: conv.weight.detach().cpu().clone() for name, conv in conv_layers(model).items()}


@torch.inference_mode()
def activations(model: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rectified feature map of every conv layer for one image, in eval mode: the map
    the next layer reads.

    Each conv's output is taken by a forward hook during one ordinary forward pass; when a
    BatchNorm directly follows the conv in its container, the BatchNorm's output instead.
    The ReLU is applied here, for display: ``relu(bn(conv(x)))`` before any pooling (max
    pooling commutes with ReLU, so where a model pools first this is still what it
    rectifies). For ``MnistCNN`` the maps are ``(32, 28, 28)`` and ``(32, 14, 14)``.

    Args:
        model: pixels ``(B, 1, 28, 28)`` -> logits ``(B, 10)``.
        image: float pixels in [0, 1], ``(1, 1, 28, 28)`` (or anything with 784 elements).

    Returns:
        ``{"conv1": (C1, H1, W1), ...}`` on CPU, all values >= 0; ``{}`` without a conv.
    """
    if image.numel() != IMAGE_SIZE * IMAGE_SIZE:
        raise ValueError(f"expected one 28x28 image, got shape {tuple(image.shape)}")
    sources = rectified_outputs(model)  # conv name -> the module whose output to read
    model.eval()
    dev, dtype = placement(model)
    x = image.reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE).to(dev, dtype)
    maps: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def fn(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if name not in maps:  # the first call, for a module used twice
                maps[name] = torch.relu(output)[0].float().cpu()  # (C, H, W)

        return fn

    hooks = [m.register_forward_hook(keep(name)) for name, m in sources.items()]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return {name: maps[name] for name in sources}


def pick_images(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` distinct seeded random test indices (int64), the same for every model."""
    if not 0 < n <= len(labels):
        raise ValueError(f"cannot pick {n} images out of {len(labels)}")
    return random_indices(len(labels), n, seed)
