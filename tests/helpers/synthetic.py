"""Synthetic 28x28 data and tiny models for unit tests: seeded, no MNIST, seconds to train."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RowCounter(nn.Module):
    """Wraps a model and counts the images it is asked to classify."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += len(x)
        return self.model(x)


def blobs(n: int, gen: torch.Generator, noise: float = 0.35) -> tuple[Tensor, Tensor]:
    """10 classes: a Gaussian blob (random amplitude) at one of 10 points of a circle,
    plus uniform background noise. Returns pixels ``(n, 1, 28, 28)`` and labels ``(n,)``."""
    y = torch.randint(0, 10, (n,), generator=gen)
    ang = y.float() * 2 * math.pi / 10
    cy, cx = 14 + 8 * torch.sin(ang), 14 + 8 * torch.cos(ang)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    amp = 0.4 + 0.6 * torch.rand(n, generator=gen)
    d2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    img = amp[:, None, None] * torch.exp(-d2 / (2 * 2.5**2))
    img = img + noise * torch.rand(n, 28, 28, generator=gen)
    return img.clamp(0, 1)[:, None], y


def tiny_cnn(n_classes: int = 10) -> nn.Module:
    """(B, 1, 28, 28) -> conv5x5/2 (8, 12, 12) -> conv5x5/2 (16, 4, 4) -> (B, n_classes)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=2),
        nn.ReLU(),
        nn.Conv2d(8, 16, 5, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, n_classes),
    )


def fit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    gen: torch.Generator,
    lr: float = 3e-3,
    batch: int = 64,
) -> nn.Module:
    """Plain Adam training on random mini-batches; returns the model in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(steps):
        i = torch.randint(0, len(x), (batch,), generator=gen)
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)  # tests check that attacks leave .grad alone
    return model.eval()
