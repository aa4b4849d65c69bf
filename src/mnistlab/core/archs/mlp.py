"""A multilayer perceptron: the question "does it hold without convolutions?".

784 -> hidden[0] -ReLU-> ... -> hidden[-1] -ReLU-> 10.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistlab.core.archs import MNIST_MEAN, MNIST_STD
from mnistlab.core.params_types import IMAGE_SIZE, NUM_CLASSES


class Model(nn.Module):
    """Fully connected layers on the flattened image.

    Args:
        hidden: the width of each hidden layer, input side first (e.g. ``[512, 256]``).
    """

    def __init__(self, *, hidden: list[int]) -> None:
        super().__init__()
        if not hidden or any(type(h) is not int or h < 1 for h in hidden):
            raise ValueError(f"hidden: a list of positive layer widths, got {hidden!r}")
        widths = [IMAGE_SIZE * IMAGE_SIZE, *hidden]
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths, widths[1:], strict=False):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]  # (B, w_in) -> (B, w_out)
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(widths[-1], NUM_CLASSES)  # (B, hidden[-1]) -> (B, 10)
        self.register_buffer("mean", torch.tensor(MNIST_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(MNIST_STD), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 10)`` for pixels ``x`` in [0, 1], shaped ``(B, 1, 28, 28)``."""
        x = ((x - self.mean) / self.std).flatten(1)  # (B, 784)
        return self.out(self.hidden(x))
