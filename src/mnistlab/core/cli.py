"""What a stage's entry module reads before it computes: its command line and its device.

Paths come from ``dvc.yaml`` as required ``--name value`` options; the device from the
``device`` param. Neither imports torch up front: ``validate_params`` and ``download``
use this module and run without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mnistlab.core.errors import ParamsError

if TYPE_CHECKING:
    import torch


def parse_args(doc: str | None, argv: list[str] | None, **options: str) -> Any:
    """Parse a stage's required ``--name value`` options (paths come from ``dvc.yaml``).

    A missing option exits 2 with one line. ``--model`` and ``--form`` name entries of
    ``params.yaml``: the stage checks them against it (``Params.model``, ``Params.form``).

    Args:
        options: ``name=help``; ``checkpoint_dir`` becomes ``--checkpoint-dir``.
    """
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # one line, not usage + error
            self.exit(2, f"{self.prog}: {message}\n")

    parser = Parser(description=doc)
    for name, help_text in options.items():
        flag = f"--{name.replace('_', '-')}"
        parser.add_argument(flag, dest=name, required=True, help=help_text)
    return parser.parse_args(argv)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)
