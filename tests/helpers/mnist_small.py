"""A real MNIST subset kept in the repo (tests/data): the first 3,000 training and 2,000
test images as gzipped IDX files, so unit tests need no network and no download."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import torch

from mnistlab.core.mnist import read_idx

DATA = Path(__file__).resolve().parents[1] / "data"


def _read(name: str) -> torch.Tensor:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(gzip.decompress((DATA / f"{name}.gz").read_bytes()))
        array = read_idx(path)
    return torch.from_numpy(array.astype("int64") if array.ndim == 1 else array.copy())


def load_small(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` of the ``train`` or ``test`` subset."""
    prefix = {"train": "train", "test": "t10k"}[split]
    return _read(f"{prefix}-images-idx3-ubyte"), _read(f"{prefix}-labels-idx1-ubyte")
