"""The architecture registry: one module per architecture, found by its name.

``mnistlab.core.archs.<arch>`` defines ``Model``, an ``nn.Module`` classifier of
``(B, 1, 28, 28)`` pixels in [0, 1] to ``(B, 10)`` logits that normalises inside
``forward``. Its constructor takes keyword arguments without defaults: a model entry of
``params.yaml`` (``models.<name>.arch_args``) spells every one, so the defaults live
there only. Adding an architecture is adding a module here; nothing lists it.

A module is imported only when a model uses it, so a stage's cache key holds only the
architecture it builds: ``train@<model>`` declares ``archs/<arch>.py``, and the
checkpoint it writes records that file's digest, which every reading stage checks.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

# The one dynamic import; the dependency test formats it with the model's architecture.
ARCH_MODULE = "mnistlab.core.archs.{arch}"

# MNIST training-set pixel statistics (of x / 255): every architecture normalises with them.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def known() -> list[str]:
    """The architectures shipped: every module in this package."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]))


def module(arch: str) -> ModuleType:
    """The module of architecture ``arch``.

    Raises:
        ValueError: no such architecture (the message lists the known ones).
    """
    if arch not in known():
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(known())})")
    return importlib.import_module(ARCH_MODULE.format(arch=arch))


def arguments(arch: str) -> list[str]:
    """The keyword arguments the constructor of ``arch`` takes, in order."""
    return list(inspect.signature(module(arch).Model).parameters)


def check_arguments(arch: str, args: Mapping[str, Any]) -> None:
    """Raise ``ValueError("<key>: ...")`` when ``args`` misses or adds a keyword of ``arch``."""
    expected = arguments(arch)
    unknown = [k for k in args if k not in expected]
    if unknown:
        raise ValueError(
            f"{unknown[0]}: unknown keyword of architecture {arch!r} "
            f"(it takes {', '.join(expected) or 'none'})"
        )
    missing = [k for k in expected if k not in args]
    if missing:
        raise ValueError(f"{missing[0]}: missing keyword of architecture {arch!r}")


def build(arch: str, args: Mapping[str, Any]):  # -> nn.Module (torch imported lazily)
    """A fresh, randomly initialised ``arch`` built with ``args``."""
    check_arguments(arch, args)
    return module(arch).Model(**dict(args))


def digest(arch: str) -> str:
    """SHA-256 of the architecture's source file: a checkpoint records it, so a reading
    stage never applies weights to code that changed since they were trained."""
    path = Path(__file__).parent / f"{arch}.py"
    return hashlib.sha256(path.read_bytes()).hexdigest()
