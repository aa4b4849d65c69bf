"""Small shared helpers: seeding and device choice."""

from __future__ import annotations

import random

import numpy as np
import torch


def set_seeds(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from mnistlab.errors import ParamsError

        raise ParamsError("device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)
