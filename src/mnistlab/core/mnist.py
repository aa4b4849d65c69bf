"""MNIST on disk: the official file table, the IDX format, MD5 checks and the loader.

Every stage that reads MNIST goes through :func:`load_mnist`, which verifies the
files' sizes and MD5s first, so corrupt data fails before any compute. Fetching the
files is the ``download`` stage's job (:mod:`mnistlab.download`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mnistlab.core.errors import DataError

if TYPE_CHECKING:  # torch is imported where tensors are made: `download` needs none
    import torch

_IDX_UBYTE = 0x08
CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class IdxFile:
    name: str
    size: int
    md5: str


# The official uncompressed files (sizes in bytes and MD5s).
MNIST_FILES: tuple[IdxFile, ...] = (
    IdxFile("train-images-idx3-ubyte", 47040016, "6bbc9ace898e44ae57da46a324031adb"),
    IdxFile("train-labels-idx1-ubyte", 60008, "a25bea736e30d166cdddb491f175f624"),
    IdxFile("t10k-images-idx3-ubyte", 7840016, "2646ac647ad5339dbf082846283269ea"),
    IdxFile("t10k-labels-idx1-ubyte", 10008, "27ae3e4e09519cfbb04c329615203637"),
)

# --------------------------------------------------------------------------- IDX format


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (big-endian header: magic, then each dim)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    with open(path, "wb") as f:
        f.write(header)
        f.write(array.tobytes())


def read_idx(path: str | Path) -> np.ndarray:
    """Read a uint8 IDX file into a numpy array.

    Raises:
        DataError: the file is missing, has a bad header, or is truncated/oversized.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read IDX file ({err.strerror})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE:
        raise DataError(f"{path}: not a uint8 IDX file (bad magic number)")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", ndim, 4))
    expected = offset + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(
            f"{path}: truncated or corrupt IDX file ({len(data)} bytes, header says {expected})"
        )
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


def md5sum(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_raw_dir(raw_dir: str | Path, files: tuple[IdxFile, ...] = MNIST_FILES) -> dict[str, str]:
    """Check that each IDX file exists with its official size and MD5.

    Returns:
        ``{file name: md5}`` for the verified files.

    Raises:
        DataError: naming the first missing, truncated or mismatching file.
    """
    raw_dir = Path(raw_dir)
    sums = {}
    for spec in files:
        path = raw_dir / spec.name
        if not path.is_file():
            raise DataError(f"{path}: missing (run the download stage: dvc repro download)")
        size = path.stat().st_size
        if size != spec.size:
            raise DataError(f"{path}: {size} bytes, expected {spec.size} (truncated or corrupt)")
        digest = md5sum(path)
        if digest != spec.md5:
            raise DataError(f"{path}: MD5 {digest} does not match the official {spec.md5}")
        sums[spec.name] = digest
    return sums


# --------------------------------------------------------------------------- loading


def load_mnist(
    raw_dir: str | Path, split: str, verify: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split as in-memory tensors (no per-sample PIL pipeline).

    Args:
        raw_dir: directory holding the four IDX files.
        split: ``"train"`` (60k) or ``"test"`` (10k).
        verify: check sizes and MD5s first, so corrupt data fails before any compute.

    Returns:
        ``images`` uint8 ``[N, 28, 28]`` and ``labels`` int64 ``[N]``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    if verify:
        verify_raw_dir(raw_dir, tuple(f for f in MNIST_FILES if f.name.startswith(prefix)))
    images = read_idx(Path(raw_dir) / f"{prefix}-images-idx3-ubyte")
    labels = read_idx(Path(raw_dir) / f"{prefix}-labels-idx1-ubyte")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{raw_dir}: {images.shape[0]} {split} images but {labels.shape[0]} labels")
    import torch

    # np.frombuffer views are read-only; copy once into torch-owned memory.
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
