"""Small classifiers of ``(B, 1, 28, 28)`` pixels for the tests of the stages that read a
model (visualize, attribution, architecture), which must find layers by walking the model.

Local on purpose: these tests check the introspection, not the registry
(``mnistlab.core.archs``), so they build their own models in several styles: attribute
blocks (:func:`StudyCNN`, the study's own CNN), a ``Sequential`` of ``Sequential``
blocks (:class:`BlockCNN`), one flat ``Sequential`` (:class:`FlatCNN`), no conv at all
(:class:`MLP`), and the classifier registered before the features (:class:`Backwards`).
All normalise inside ``forward`` like the study's models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mnistlab.core.archs import cnn

MEAN, STD = 0.1307, 0.3081  # MNIST training-set pixel statistics


class _Normalised(nn.Module):
    """Normalises pixels in ``forward`` before :meth:`body`."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(STD), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 10)`` for pixels ``(B, 1, 28, 28)`` in [0, 1]."""
        return self.body((x - self.mean) / self.std)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def StudyCNN(batch_norm: bool = False, channels: int = 32, hidden: int = 500) -> nn.Module:  # noqa: N802
    """The study's own CNN (``core/archs/cnn.py``): blocks ``conv1``, ``conv2`` of
    conv3x3-[bn]-pool2-relu, then ``fc1``, ``fc2``; built here with defaults for brevity."""
    return cnn.Model(batch_norm=batch_norm, channels=channels, hidden=hidden)


def study_features(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The removed ``MnistCNN.features``, verbatim: what the activations figure showed
    before layers were found by walking the model (the reference for bit equality)."""
    x = (x - model.mean) / model.std
    out = {}
    for name in ("conv1", "conv2"):
        block = getattr(model, name)
        h = block.conv(x)
        if hasattr(block, "bn"):
            h = block.bn(h)
        out[name] = block.relu(h)
        x = block.relu(block.pool(h))
    return out


class MLP(_Normalised):
    """Flatten -> Linear(784, h1)-ReLU -> Linear(h1, h2)-ReLU -> Linear(h2, 10); no conv."""

    def __init__(self, h1: int = 32, h2: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Linear(h2, 10),
        )

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BlockCNN(_Normalised):
    """One conv3x3-[bn]-relu-pool2 block per width in ``channels`` (``features.k``), then
    ``fc`` -ReLU-> ``out``: e.g. widths 64, 128, or three layers."""

    def __init__(
        self, channels: Sequence[int] = (64, 128), hidden: int = 16, batch_norm: bool = False
    ) -> None:
        super().__init__()
        blocks = []
        for c_in, c_out in zip([1, *channels], channels, strict=False):
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            blocks.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*blocks)
        side = 28 >> len(channels)
        self.fc = nn.Linear(channels[-1] * side * side, hidden)
        self.out = nn.Linear(hidden, 10)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc(self.features(x).flatten(1))))


class FlatCNN(_Normalised):
    """Everything in one flat ``nn.Sequential`` (``layers.0``, ``layers.1``, ...): no
    block holds a conv alone. ``conv(5)-bn-relu-pool -> conv(7)-relu-pool -> fc -> fc``."""

    def __init__(self, channels: Sequence[int] = (5, 7), hidden: int = 12) -> None:
        super().__init__()
        c1, c2 = channels
        self.layers = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Backwards(_Normalised):
    """Registers its classifier before its conv (``head`` then ``stem``): the forward
    order, not the registration order, is bottom-up."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 14 * 14, 10)
        self.stem = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x).flatten(1))


def seeded(cls: type[nn.Module], *args, seed: int = 0, **kwargs) -> nn.Module:
    """``cls(*args, **kwargs)`` with seeded default init, in eval mode; BatchNorm given
    non-trivial affine parameters and statistics so it changes the maps. The global RNG
    is left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls(*args, **kwargs)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
    return model.eval()
