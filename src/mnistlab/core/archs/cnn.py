"""The study's CNN: two conv blocks and two fully connected layers.

conv3x3(C)-[BN]-pool2-ReLU -> conv3x3(C)-[BN]-pool2-ReLU -> FC(hidden)-ReLU -> FC10.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from mnistlab.core.archs import MNIST_MEAN, MNIST_STD
from mnistlab.core.params_types import IMAGE_SIZE, NUM_CLASSES


class Model(nn.Module):
    """The reference report's CNN, optionally with BatchNorm.

    Each block applies its ReLU after the pool: max-pooling commutes with the
    monotone ReLU, bit for bit in the output and in every gradient, and the ReLU
    (forward and backward) then touches a quarter of the elements. On the CPU those
    memory-bound passes over ``(B, 32, 28, 28)`` were a quarter of an attack step.

    Args:
        batch_norm: insert BatchNorm2d after each conv, before its ReLU.
        channels: output channels of both conv layers.
        hidden: width of the first fully connected layer.
    """

    def __init__(self, *, batch_norm: bool, channels: int, hidden: int) -> None:
        super().__init__()

        def block(c_in: int) -> nn.Sequential:
            layers: dict[str, nn.Module] = {"conv": nn.Conv2d(c_in, channels, 3, padding=1)}
            if batch_norm:
                layers["bn"] = nn.BatchNorm2d(channels)
            layers["pool"] = nn.MaxPool2d(kernel_size=2, stride=2)
            layers["relu"] = nn.ReLU()  # after the pool: the same function, 4x cheaper
            return nn.Sequential(OrderedDict(layers))

        self.conv1 = block(1)  # (B, 1, 28, 28) -> (B, C, 14, 14)
        self.conv2 = block(channels)  # (B, C, 14, 14) -> (B, C, 7, 7)
        side = IMAGE_SIZE // 2 // 2  # two 2x2 pools; padding=1 keeps conv sizes
        self.fc1 = nn.Linear(channels * side * side, hidden)  # (B, C*7*7) -> (B, hidden)
        self.fc2 = nn.Linear(hidden, NUM_CLASSES)  # (B, hidden) -> (B, 10)
        self.register_buffer("mean", torch.tensor(MNIST_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(MNIST_STD), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 10)`` for pixels ``x`` in [0, 1], shaped ``(B, 1, 28, 28)``."""
        x = self.conv1((x - self.mean) / self.std)  # (B, C, 14, 14)
        x = self.conv2(x)  # (B, C, 7, 7)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)
