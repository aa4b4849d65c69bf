"""The stage runtime: logging, signals, one-line errors, torch threads.

Stage modules under ``stages/`` wrap their ``main`` with :func:`stage_main`; an
expected failure (bad params, bad data, unreachable store) ends the process with
one line naming the cause and a non-zero exit, before anything is overwritten.

A stage also:

- dies with its parent: ``dvc repro`` killed (SIGTERM or SIGKILL) leaves no stage
  running on behind it (``PR_SET_PDEATHSIG`` on Linux, plus a watchdog thread that
  notices a new parent pid anywhere);
- holds a per-stage lock for its whole life, so two processes never write the same
  stage's outputs at once (the second fails in one line naming the first's pid);
- says honestly what it left behind when it fails or is interrupted after writing
  outputs (``outputs were written but MLflow logging failed: ...``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistlab.core.errors import MnistlabError, ParamsError, TrackingError
from mnistlab.harness.supervision import _state, _terminate, stage_lock, stage_watchdog

if TYPE_CHECKING:  # torch is imported lazily: validate_params and download need none
    pass

log = logging.getLogger("mnistlab")

EXIT_ERROR = 1
EXIT_USAGE = 2  # invalid params.yaml or command line: nothing ran
EXIT_INTERRUPTED = 130

MAX_REASON = 300  # characters of a foreign error kept in a one-line message
# Exceptions from these packages are failures of the tracking store, not of the stage.
TRACKING_PACKAGES = ("mlflow", "sqlalchemy", "sqlite3", "alembic", "botocore", "boto3")
# The tracking modules: a frame in any of them makes the failure the store's.
TRACKING_MODULES = (
    "mnistlab.harness.tracking",
    "mnistlab.harness.tracking_store",
    "mnistlab.harness.provenance",
)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    # MLflow and alembic are chatty at INFO; keep stage logs readable.
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # It logs every database error with a traceback, then raises it: the stage reports
    # what it raised in one line (see failure_message).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def mark_outputs_written() -> None:
    """Record that the stage's output files are all written (only logging is left).

    ``core.outputs.write_outputs`` calls this between writing the files and logging
    them, so a later failure or interrupt says the outputs are on disk.
    """
    _state.outputs_written = True


def outputs_written() -> bool:
    """Whether :func:`mark_outputs_written` was called in this stage run."""
    return _state.outputs_written


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """``text`` on one line (its lines joined by spaces), cut to ``limit`` characters."""
    flat = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def stage_name(fn: Callable[..., Any], argv: list[str] | None = None) -> str:
    """The stage's DVC name: ``DVC_STAGE``, else built like DVC's (``attack@fgsm-cnn``).

    By hand, the entry module's last part plus the ``--form`` and ``--model`` values.
    """
    if os.environ.get("DVC_STAGE"):
        return os.environ["DVC_STAGE"]
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec else Path(sys.argv[0]).stem
    base = module.rsplit(".", 1)[-1]
    words = list(sys.argv[1:] if argv is None else argv)
    values = []
    for key in ("--form", "--model"):
        for i, word in enumerate(words):
            if word == key and i + 1 < len(words):
                values.append(words[i + 1])
            elif word.startswith(f"{key}="):
                values.append(word.split("=", 1)[1])
    return f"{base}@{'-'.join(values)}" if values else base


def _package_dirs() -> list[str]:
    dirs = []
    for name in TRACKING_PACKAGES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            dirs.append(os.path.dirname(module.__file__) + os.sep)
    return dirs


def is_tracking_failure(err: BaseException) -> bool:
    """Whether ``err`` came from the MLflow store (its type or any frame it passed)."""
    if isinstance(err, TrackingError) or type(err).__module__.split(".")[0] in TRACKING_PACKAGES:
        return True
    files = [getattr(sys.modules.get(m), "__file__", None) or "<none>" for m in TRACKING_MODULES]
    prefixes = _package_dirs()
    tb = err.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename in files or any(filename.startswith(p) for p in prefixes):
            return True
        tb = tb.tb_next
    return False


def _written_summary(limit: int = 3) -> str:
    from mnistlab.core.files import written_paths

    cwd = Path.cwd()
    names = []
    for path in written_paths():
        with contextlib.suppress(ValueError):
            path = path.resolve().relative_to(cwd)
        names.append(str(path))
    shown = ", ".join(dict.fromkeys(names[:limit]))
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def first_line(err: BaseException, limit: int = MAX_REASON) -> str:
    """The first non-empty line of ``err`` (driver errors append their SQL), cut short."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return one_line(lines[0], limit) if lines else type(err).__name__


def failure_message(name: str, err: BaseException) -> str | None:
    """The one line for an unexpected exception, or ``None`` to show its traceback.

    MLflow failures are one line (they are the store's, not a bug of ours), and say
    whether the stage's outputs were already on disk; anything else is a bug.
    """
    from mnistlab.core.files import written_paths

    if not is_tracking_failure(err):
        return None
    if isinstance(err, TrackingError) and not (outputs_written() or written_paths()):
        return None  # tracking.py's own one line, from before any output (store unreachable)
    reason = first_line(err)
    rerun = f"rerun with `dvc repro {name}` once the tracking store works"
    if outputs_written() or written_paths():
        return (
            f"{name}: outputs were written but MLflow logging failed: {reason}; "
            f"written: {_written_summary()}; {rerun}"
        )
    return f"{name}: MLflow logging failed before any output was written: {reason}; {rerun}"


def interrupted_message(name: str) -> str:
    """The one line for SIGINT/SIGTERM: what was kept, honestly."""
    from mnistlab.core.files import written_paths

    rerun = f"rerun with `dvc repro {name}`"
    if outputs_written():
        return (
            f"{name}: interrupted while logging to MLflow; its outputs were written but the "
            f"MLflow run is incomplete; {rerun}"
        )
    if written_paths():
        return (
            f"{name}: interrupted after these outputs were written: {_written_summary()}; {rerun}"
        )
    return "interrupted; no partial outputs were kept"


def stage_main(fn: Callable[..., None]) -> Callable[..., None]:
    """Decorate a stage's ``main(argv)`` with logging, signals, a lock and clean errors."""

    @functools.wraps(fn)
    def wrapper(argv: list[str] | None = None) -> None:
        from mnistlab.core.files import forget_written

        setup_logging()
        name = stage_name(fn, argv)
        _state.name, _state.outputs_written, _state.terminating = name, False, False
        forget_written()
        signal.signal(signal.SIGTERM, _terminate)
        try:
            with stage_watchdog(), stage_lock(name):
                fn(argv)
            if _state.terminating:  # the interrupt was swallowed and the work went on
                raise KeyboardInterrupt("signal 15")
        except MnistlabError as err:
            message = failure_message(name, err) if isinstance(err, TrackingError) else None
            log.error("%s", message or one_line(str(err), limit=2000))
            sys.exit(EXIT_USAGE if isinstance(err, ParamsError) else EXIT_ERROR)
        except KeyboardInterrupt:
            log.error("%s", interrupted_message(name))
            sys.exit(EXIT_INTERRUPTED)
        except Exception as err:
            message = failure_message(name, err)
            if message is None:
                raise  # a bug: its traceback is the useful report
            log.error("%s", message)
            sys.exit(EXIT_ERROR)

    return wrapper


def apply_threads(setting: str | int) -> int:
    """Size torch's thread pools from the ``threads`` param, before any torch work.

    ``auto``: the cores this process may use divided by the DVC queue workers running
    (see :func:`mnistlab.harness.procs.auto_threads`), at least 1; an int: that many.
    Sets the intra-op threads and, unless its pool has started, the inter-op ones.

    Returns:
        The intra-op thread count now in effect.
    """
    import torch

    from mnistlab.harness.procs import auto_threads

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
