"""The two CNNs of the study, and the registry that names them.

Both take raw pixels in [0, 1] and normalise inside ``forward``, so attacks clamp
to [0, 1], figures show real pixels, and a served model takes raw pixels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistlab.core.config import IMAGE_SIZE, NUM_CLASSES
from mnistlab.core.errors import CheckpointError

# MNIST training-set pixel statistics (of x / 255).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class MnistCNN(nn.Module):
    """conv3x3(32)-[BN]-ReLU-pool2 -> conv3x3(32)-[BN]-ReLU-pool2 -> FC500-ReLU -> FC10.

    Args:
        batch_norm: insert BatchNorm2d after each conv, before its ReLU.
        channels: output channels of both conv layers.
        hidden: width of the first fully connected layer.
    """

    def __init__(self, batch_norm: bool = False, channels: int = 32, hidden: int = 500) -> None:
        super().__init__()

        def block(c_in: int) -> nn.Sequential:
            layers: dict[str, nn.Module] = {"conv": nn.Conv2d(c_in, channels, 3, padding=1)}
            if batch_norm:
                layers["bn"] = nn.BatchNorm2d(channels)
            layers["relu"] = nn.ReLU()
            layers["pool"] = nn.MaxPool2d(kernel_size=2, stride=2)
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
        x = (x - self.mean) / self.std
        x = self.conv2(self.conv1(x))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Post-ReLU feature maps of both conv layers (before pooling), for visualisation."""
        x = (x - self.mean) / self.std
        out = {}
        for name in ("conv1", "conv2"):
            block = getattr(self, name)
            pre_pool = block[:-1](x)  # conv [-> BN] -> ReLU
            out[name] = pre_pool
            x = block[-1](pre_pool)
        return out


REGISTRY: dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: MnistCNN(batch_norm=False),
    "cnn_bn": lambda: MnistCNN(batch_norm=True),
    # The plain architecture again; what differs is its training (models.cnn_adv in
    # params.yaml: adversarial, L-inf eps 0.3).
    "cnn_adv": lambda: MnistCNN(batch_norm=False),
}


def build_model(name: str) -> MnistCNN:
    """Instantiate a registered model by name."""
    try:
        return REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def save_checkpoint(path: str | Path, model: nn.Module, name: str, params: dict[str, Any]) -> None:
    """Save ``{"model": name, "state_dict": ..., "params": ...}`` atomically."""
    from mnistlab.core.files import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Save through a file object: given a path, torch names the archive inside the zip
    # after the (random) temp file name, and identical models would differ in bytes.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"model": name, "state_dict": state, "params": params}, f)


def load_checkpoint(
    path: str | Path, *, expected: str | None = None, device: torch.device | str = "cpu"
) -> tuple[MnistCNN, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`, in eval mode.

    Args:
        expected: the model name the caller means (``--model``); a checkpoint of
            another model (say ``cnn_bn.pt`` copied over ``cnn.pt``) is an error.

    Raises:
        CheckpointError: the file is missing, unreadable, not one of ours, or of
            another model than ``expected``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint missing (run: dvc repro)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        model = build_model(ckpt["model"])
        model.load_state_dict(ckpt["state_dict"])
    except Exception as err:  # noqa: BLE001 - any failure means a bad checkpoint
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: corrupt or incompatible checkpoint ({reason})") from None
    if expected is not None and ckpt["model"] != expected:
        raise CheckpointError(f"{path}: holds model {ckpt['model']!r}, expected {expected!r}")
    return model.to(device).eval(), ckpt
