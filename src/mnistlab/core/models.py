"""Models of the study: built from their ``params.yaml`` entry, saved and loaded as checkpoints.

Architectures live in :mod:`mnistlab.core.archs` (one module each). Every model takes raw
pixels in [0, 1] and normalises inside ``forward``, so attacks clamp to [0, 1], figures
show real pixels, and a served model takes raw pixels.

A checkpoint is self-describing: the model's name, its architecture, the architecture's
keyword arguments and the digest of the architecture's source. A reading stage builds the
model from the checkpoint alone (it declares the checkpoint, not the architecture), and
refuses weights trained with other architecture code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistlab.core import archs
from mnistlab.core.errors import CheckpointError


def build_model(arch: str, arch_args: dict[str, Any]) -> nn.Module:
    """A fresh ``arch`` with ``arch_args`` (``models.<name>.arch``/``.arch_args``)."""
    return archs.build(arch, arch_args)


def model_from_params(params: Any, name: str) -> nn.Module:
    """A fresh model ``name`` of ``params`` (:class:`~mnistlab.core.config.Params`)."""
    spec = params.model(name)
    return build_model(spec.arch, spec.arch_args)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    name: str,
    params: dict[str, Any],
    *,
    arch: str,
    arch_args: dict[str, Any],
) -> None:
    """Save ``{"model", "arch", "arch_args", "arch_digest", "state_dict", "params"}``
    atomically."""
    from mnistlab.core.files import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    ckpt = {
        "model": name,
        "arch": arch,
        "arch_args": dict(arch_args),
        "arch_digest": archs.digest(arch),
        "state_dict": state,
        "params": params,
    }
    # Save through a file object: given a path, torch names the archive inside the zip
    # after the (random) temp file name, and identical models would differ in bytes.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(ckpt, f)


def load_checkpoint(
    path: str | Path, *, expected: str | None = None, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`, in eval mode.

    Args:
        expected: the model name the caller means (``--model``); a checkpoint of
            another model (say ``cnn_bn.pt`` copied over ``cnn.pt``) is an error.

    Raises:
        CheckpointError: the file is missing, unreadable, not one of ours, of another
            model than ``expected``, trained with other code of its architecture, or its
            weights do not fit the architecture it names; always one line.
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
    name, arch, arch_args = ckpt.get("model"), ckpt.get("arch"), ckpt.get("arch_args")
    if not isinstance(name, str) or not isinstance(arch, str) or not isinstance(arch_args, dict):
        raise CheckpointError(
            f"{path}: corrupt or incompatible checkpoint (no model name and architecture)"
        )
    if expected is not None and name != expected:
        raise CheckpointError(
            f"{path}: holds model {name!r}, expected {expected!r} (another model's checkpoint "
            f"copied over it?); restore it with `dvc checkout {path}` or `dvc repro "
            f"train@{expected}`"
        )
    if arch not in archs.known():
        raise CheckpointError(
            f"{path}: corrupt or incompatible checkpoint (unknown architecture {arch!r})"
        )
    if ckpt.get("arch_digest") != archs.digest(arch):
        raise CheckpointError(
            f"{path}: trained with other code of architecture {arch!r} "
            f"(src/mnistlab/core/archs/{arch}.py changed since); rerun `dvc repro train@{name}`"
        )
    try:
        model = build_model(arch, arch_args)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: corrupt or incompatible checkpoint ({_reason(err)})"
        ) from None
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


def check_models(models: dict[str, Any]) -> None:
    """Build every model entry of ``params.yaml`` and run one blank image through it.

    Raises:
        ParamsError: ``models.<name>.<key>: ...`` for a missing or unknown keyword of its
            architecture, a keyword value the architecture refuses, or a model whose
            output for a ``(1, 1, 28, 28)`` image is not 10 logits.
    """
    from mnistlab.core.errors import ParamsError
    from mnistlab.core.params_types import IMAGE_SIZE, NUM_CLASSES

    for name, spec in models.items():
        where = f"params.yaml: models.{name}"
        try:
            model = build_model(spec.arch, spec.arch_args)
        except ValueError as err:  # "<keyword>: reason" from the registry or the model
            raise ParamsError(f"{where}.arch_args.{_reason(err)}") from None
        except TypeError as err:  # a keyword of the wrong type deep in torch
            raise ParamsError(f"{where}.arch_args: {_reason(err)}") from None
        try:
            with torch.no_grad():
                out = model.eval()(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE))
        except Exception as err:  # noqa: BLE001 - any failure: the entry is not a classifier
            raise ParamsError(
                f"{where}: architecture {spec.arch!r} fails on a (1, 1, 28, 28) image "
                f"({_reason(err)})"
            ) from None
        shape = tuple(getattr(out, "shape", ()))
        if shape != (1, NUM_CLASSES):
            raise ParamsError(
                f"{where}: architecture {spec.arch!r} returns {shape or type(out).__name__} "
                f"for a (1, 1, 28, 28) image, not (1, {NUM_CLASSES}) logits"
            )
