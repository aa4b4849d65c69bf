"""A CNN with a width per conv layer: as many 3x3 conv blocks as ``channels`` lists.

conv3x3(c1)-[BN]-pool2-ReLU -> ... -> conv3x3(cn)-[BN]-pool2-ReLU -> FC(hidden)-ReLU -> FC10.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistlab.core.archs import MNIST_MEAN, MNIST_STD
from mnistlab.core.params_types import IMAGE_SIZE, NUM_CLASSES


class Model(nn.Module):
    """Conv blocks of the given widths, each halving the side (28 -> 14 -> 7 -> 3).

    Args:
        channels: output channels of each conv layer, input side first (e.g. ``[64, 128]``).
        hidden: width of the fully connected layer after the convolutions.
        batch_norm: insert BatchNorm2d after each conv, before its ReLU.
    """

    def __init__(self, *, channels: list[int], hidden: int, batch_norm: bool) -> None:
        super().__init__()
        if not channels or any(type(c) is not int or c < 1 for c in channels):
            raise ValueError(f"channels: a list of positive conv widths, got {channels!r}")
        side = IMAGE_SIZE
        for _ in channels:
            side //= 2  # each block's 2x2 pool
        if side < 1:
            raise ValueError(f"channels: {len(channels)} conv blocks pool 28x28 below 1x1")
        blocks = []
        for c_in, c_out in zip([1, *channels], channels, strict=False):
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.MaxPool2d(2, 2), nn.ReLU()]  # (B, c_in, s, s) -> (B, c_out, s/2, s/2)
            blocks.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels[-1] * side * side, hidden)  # (B, C*s*s) -> (B, hidden)
        self.out = nn.Linear(hidden, NUM_CLASSES)  # (B, hidden) -> (B, 10)
        self.register_buffer("mean", torch.tensor(MNIST_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(MNIST_STD), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 10)`` for pixels ``x`` in [0, 1], shaped ``(B, 1, 28, 28)``."""
        x = self.features((x - self.mean) / self.std)  # (B, C, s, s)
        return self.out(torch.relu(self.fc(x.flatten(1))))
