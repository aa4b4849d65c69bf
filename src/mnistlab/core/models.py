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

from mnistlab.core.errors import CheckpointError
from mnistlab.core.params_types import IMAGE_SIZE, NUM_CLASSES

# MNIST training-set pixel statistics (of x / 255).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class MnistCNN(nn.Module):
    """conv3x3(32)-[BN]-ReLU-pool2 -> conv3x3(32)-[BN]-ReLU-pool2 -> FC500-ReLU -> FC10.

    Each block applies its ReLU after the pool: max-pooling commutes with the
    monotone ReLU, bit for bit in the output and in every gradient, and the ReLU
    (forward and backward) then touches a quarter of the elements. On the CPU those
    memory-bound passes over ``(B, 32, 28, 28)`` were a quarter of an attack step.

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
        x = self.conv2(x)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Post-ReLU feature maps of both conv layers (before pooling), for visualisation."""
        x = (x - self.mean) / self.std
        out = {}
        for name in ("conv1", "conv2"):
            block = getattr(self, name)
            h = block.conv(x)
            if hasattr(block, "bn"):
                h = block.bn(h)
            out[name] = block.relu(h)  # (B, C, H, W): what the block's pool sees, rectified
            x = block.relu(block.pool(h))
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
        CheckpointError: the file is missing, unreadable, not one of ours, of another
            model than ``expected``, or its weights do not fit the architecture it
            names; always one line.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint missing (run: dvc repro)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means a bad checkpoint
        raise CheckpointError(
            f"{path}: corrupt or incompatible checkpoint ({_reason(err)})"
        ) from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict)):
        raise CheckpointError(f"{path}: corrupt or incompatible checkpoint (not an mnistlab one)")
    name = ckpt.get("model")
    if not isinstance(name, str) or name not in REGISTRY:
        raise CheckpointError(
            f"{path}: corrupt or incompatible checkpoint (unknown model {name!r})"
        )
    if expected is not None and name != expected:
        raise CheckpointError(
            f"{path}: holds model {name!r}, expected {expected!r} (another model's checkpoint "
            f"copied over it?); restore it with `dvc checkout {path}` or `dvc repro "
            f"train@{expected}`"
        )
    model = build_model(name)
    mismatch = state_dict_mismatch(model, ckpt["state_dict"])
    if mismatch:
        raise CheckpointError(
            f"{path}: corrupt or incompatible checkpoint (weights do not fit model "
            f"{name!r}: {mismatch})"
        )
    try:
        model.load_state_dict(ckpt["state_dict"])
    except Exception as err:  # noqa: BLE001 - any failure means a bad checkpoint
        raise CheckpointError(
            f"{path}: corrupt or incompatible checkpoint ({_reason(err)})"
        ) from None
    model = model.to(device).eval()
    if torch.device(device).type == "cpu":
        # channels_last convolutions run 2x faster on this CPU for the forward and
        # input-gradient passes every reading stage makes (BENCHMARKS.md); a 1-channel
        # input is already in that layout, so callers pass images as they are.
        model = model.to(memory_format=torch.channels_last)
    return model, ckpt


def state_dict_mismatch(model: nn.Module, state: dict[str, Any], limit: int = 3) -> str:
    """How ``state`` fails to fit ``model`` (missing, unexpected, mis-shaped keys), or ``""``."""
    own = model.state_dict()
    parts = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and getattr(state[k], "shape", None) != v.shape
    ]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"{label} {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def _reason(err: BaseException) -> str:
    """The first line of an error, for a one-line message."""
    text = str(err).strip().splitlines()
    return text[0].strip() if text else type(err).__name__
