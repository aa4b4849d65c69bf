"""The stage runtime: logging, signals, one-line errors, seeds, device and threads.

Stage modules under ``stages/`` wrap their ``main`` with :func:`stage_main`; an
expected failure (bad params, bad data, unreachable store) ends the process with
one line naming the cause and a non-zero exit, before anything is overwritten.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mnistlab.core.errors import MnistlabError, ParamsError

if TYPE_CHECKING:  # torch is imported lazily: validate_params and download need none
    import torch

log = logging.getLogger("mnistlab")

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    # MLflow and alembic are chatty at INFO; keep stage logs readable.
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def _terminate(signum: int, frame: Any) -> None:
    # Unwind like Ctrl-C so context managers clean up temp files and end the MLflow run.
    raise KeyboardInterrupt(f"signal {signum}")


def stage_main(fn: Callable[..., None]) -> Callable[..., None]:
    """Decorate a stage's ``main(argv)`` with logging, SIGTERM handling and clean errors."""

    @functools.wraps(fn)
    def wrapper(argv: list[str] | None = None) -> None:
        setup_logging()
        signal.signal(signal.SIGTERM, _terminate)
        try:
            fn(argv)
        except MnistlabError as err:
            log.error("%s", err)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            log.error("interrupted; no partial outputs were kept")
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def set_seeds(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator seeded the same way."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def apply_threads(setting: str | int) -> int:
    """Size torch's thread pools from the ``threads`` param, before any torch work.

    ``auto``: the cores this process may use divided by the DVC queue workers running
    (see :func:`mnistlab.core.procs.auto_threads`), at least 1; an int: that many.
    Sets the intra-op threads and, unless its pool has started, the inter-op ones.

    Returns:
        The intra-op thread count now in effect.
    """
    import torch

    from mnistlab.core.procs import auto_threads

    root = os.environ.get("DVC_ROOT") or os.getcwd()
    n = auto_threads(root) if setting == "auto" else int(setting)
    torch.set_num_threads(n)
    set_interop = getattr(torch, "set_num_interop_threads", None) or torch.set_interop_threads
    try:
        set_interop(n)
    except RuntimeError:  # already set, or parallel work already started in this process
        pass
    log.info("torch threads: %d (threads: %s)", n, setting)
    return n


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def parse_args(doc: str | None, argv: list[str] | None, **options: str) -> Any:
    """Parse a stage's required ``--name value`` options (paths come from ``dvc.yaml``).

    Args:
        options: ``name=help``; ``checkpoint_dir`` becomes ``--checkpoint-dir``.
    """
    import argparse

    parser = argparse.ArgumentParser(description=doc)
    for name, help_text in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True, help=help_text)
    return parser.parse_args(argv)
