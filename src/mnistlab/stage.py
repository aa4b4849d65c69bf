"""What every stage entry point shares: logging, signals, params, one-line errors.

Stage modules under ``stages/`` wrap their ``main`` with :func:`stage_main`; an
expected failure (bad params, bad data, unreachable store) ends the process with
one line naming the cause and a non-zero exit, before anything is overwritten.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from mnistlab.errors import MnistlabError

log = logging.getLogger("mnistlab")

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
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
