"""Transfer of adversarial examples between models: crafted on one, scored on another."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mnistlab.attacks import predict


def targeted_success(model: nn.Module, arrays: dict[str, np.ndarray]) -> float:
    """Fraction of targeted examples (original class != target) ``model`` puts in the target."""
    images = torch.from_numpy(arrays["images"])  # (T, N, 1, 28, 28)
    targets = torch.from_numpy(arrays["targets"]).long()[:, None].expand(images.shape[:2])
    originals = torch.from_numpy(arrays["original_labels"]).long()[None, :].expand_as(targets)
    keep = originals != targets
    pred = predict(model, images.flatten(0, 1)).view(targets.shape)
    return float((pred == targets)[keep].float().mean())


def noise_success(model: nn.Module, arrays: dict[str, np.ndarray]) -> float:
    """Fraction of learned-noise examples (source != target) ``model`` puts in the target."""
    images = torch.from_numpy(arrays["images"])
    targets = torch.from_numpy(arrays["targets"]).long()
    keep = torch.from_numpy(arrays["sources"]).long() != targets
    return float((predict(model, images) == targets)[keep].float().mean())


def untargeted_success(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor,
                       x_clean: torch.Tensor) -> float:
    """Of the images ``model`` classifies correctly when clean, the fraction it gets wrong
    on their adversarial versions."""
    clean_ok = predict(model, x_clean) == y
    fooled = predict(model, x_adv) != y
    return float(fooled[clean_ok].float().mean()) if clean_ok.any() else 0.0
