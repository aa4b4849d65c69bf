"""Supervision of a running stage: SIGTERM, dying with its parent, its per-stage lock.

:func:`mnistlab.harness.runtime.stage_main` runs every stage inside :func:`stage_watchdog`
and :func:`stage_lock`, with :func:`_terminate` as its SIGTERM handler; ``_state`` is
what the running stage has done so far, shared with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnistlab.core.errors import StageBusyError
from mnistlab.harness import procs

log = logging.getLogger("mnistlab")

# The parent as early as a stage can see it (this module is imported before any work):
# the watchdog compares against it, which also covers a parent that dies before prctl.
_START_PPID = os.getppid()
PARENT_POLL_S = 1.0
# Python drops an exception raised where it cannot propagate (a weakref callback, a
# __del__): a SIGTERM whose KeyboardInterrupt landed there is sent again after this long.
REARM_S = 2.0
LOCK_DIR = Path(".dvc") / "tmp" / "mnistlab-locks"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PR_SET_NAME = 15


class _State:
    """What the running stage has done so far (one stage per process)."""

    name: str = ""
    outputs_written: bool = False
    terminating: bool = False  # a SIGTERM arrived
    signalled_at: float = 0.0  # when the last KeyboardInterrupt was raised for it


_state = _State()


def _unwinding() -> bool:
    """Whether a KeyboardInterrupt is propagating (we are in its finally/__exit__ code)."""
    exc, seen = sys.exc_info()[1], set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


def _terminate(signum: int, frame: Any) -> None:
    # Unwind like Ctrl-C so context managers clean up temp files and end the MLflow run.
    # A SIGTERM during that clean-up (parent-death signal and watchdog both firing, or
    # the watchdog's repeat) must not cut it short, so only one raises at a time.
    _state.terminating = True
    if _unwinding():
        return
    _state.signalled_at = time.monotonic()
    raise KeyboardInterrupt(f"signal {signum}")


def prctl(option: int, arg: int | bytes) -> bool:
    """Linux's ``prctl(option, arg)`` for this process; whether the kernel accepted it
    (``False`` elsewhere than Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        value = ctypes.c_char_p(arg) if isinstance(arg, bytes) else ctypes.c_ulong(arg)
        zero = ctypes.c_ulong(0)
        return libc.prctl(option, value, zero, zero, zero) == 0
    except (OSError, AttributeError):
        return False


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies.

    Returns:
        whether the kernel accepted it (``False`` elsewhere than Linux).
    """
    return prctl(_PR_SET_PDEATHSIG, int(sig))


def _watchdog(
    ppid: int, watched: list[procs.ProcInfo], stop: threading.Event, interval: float
) -> None:
    """SIGTERM this process when its parent is no longer ``ppid`` (when ``ppid`` > 1) or
    a ``watched`` process is gone (the DVC process; a warm worker's launcher), and again
    while a SIGTERM has not made the stage unwind (its interrupt was swallowed)."""
    while True:
        gone = [p for p in watched if not procs.is_alive(p.pid, p.start)]
        if not _state.terminating:
            if ppid > 1 and os.getppid() != ppid:
                log.warning("parent process %d is gone; stopping", ppid)
                os.kill(os.getpid(), signal.SIGTERM)
            elif gone:
                name = "dvc" if procs.dvc_args(gone[0].argv) is not None else "launcher"
                log.warning("%s process %d is gone; stopping", name, gone[0].pid)
                os.kill(os.getpid(), signal.SIGTERM)
        elif time.monotonic() - _state.signalled_at >= REARM_S:
            os.kill(os.getpid(), signal.SIGTERM)  # ignored while it is unwinding
        if stop.wait(interval):
            return


def _unraisable(info: Any) -> None:
    """Python's hook for exceptions it cannot raise (in a weakref callback, a __del__):
    one of our interrupts landed there, so have the watchdog send it again at once."""
    if isinstance(info.exc_value, KeyboardInterrupt) and _state.terminating:
        _state.signalled_at = 0.0
        return
    sys.__unraisablehook__(info)


@contextlib.contextmanager
def stage_watchdog(ppid: int | None = None, interval: float = PARENT_POLL_S) -> Iterator[None]:
    """Terminate (SIGTERM, handled like Ctrl-C) when the parent process goes away.

    Sets ``PR_SET_PDEATHSIG`` and runs a watchdog thread that compares the parent pid
    with ``ppid`` (which also covers a parent dying before prctl, and other systems),
    checks that the DVC process running the stage (if any) is alive, and repeats a
    SIGTERM whose interrupt Python swallowed.

    Args:
        ppid: the parent to outlive no longer; the parent seen at import by default.
            No parent is watched under pid 1 (started by init: there is none to lose).
        interval: seconds between the watchdog's checks.
    """
    watching_default = ppid is None
    ppid = _START_PPID if ppid is None else ppid
    if ppid > 1:
        set_parent_death_signal(signal.SIGTERM)
    # DVC runs a stage through `$SHELL -c` (or /bin/sh), and a shell such as dash forks
    # the command instead of replacing itself: the stage's parent is then the shell,
    # which outlives a killed DVC. So the DVC process is watched too.
    # A warm worker (mnistlab.harness.warm) acts for its launcher: that process is watched.
    watched = [procs.dvc_ancestor(), procs.stage_process()] if watching_default else []
    watched = [p for p in watched if p is not None and p.pid != os.getpid()]
    stop = threading.Event()
    # The first check runs at once: a parent that died before prctl is caught too.
    watcher = threading.Thread(
        target=_watchdog, args=(ppid, watched, stop, interval), name="stage-watchdog", daemon=True
    )
    watcher.start()
    previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    try:
        yield
    finally:
        stop.set()
        sys.unraisablehook = previous_hook
        if ppid > 1:
            set_parent_death_signal(0)  # in-process callers (tests) keep their behaviour


def lock_path(name: str, root: str | Path | None = None) -> Path:
    """The lock file of stage ``name`` in the workspace ``root`` (its outputs' home).

    ``<root>/.dvc/tmp/mnistlab-locks/<name>.lock`` in a DVC workspace. The root is
    where the outputs are written (the current project), not ``DVC_ROOT``: queued
    experiments run in their own copies and may run the same stage at once.
    """
    from mnistlab.harness.provenance import find_root

    root = Path(root) if root is not None else find_root()
    safe = re.sub(r"[^A-Za-z0-9@._-]", "_", name)
    if (root / ".dvc").is_dir():
        return root / LOCK_DIR / f"{safe}.lock"
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "mnistlab-locks" / f"{digest}-{safe}.lock"


@contextlib.contextmanager
def stage_lock(name: str, root: str | Path | None = None) -> Iterator[Path]:
    """Hold the stage's exclusive lock (``filelock``: ``flock`` on Linux) while the body runs.

    The holder writes its pid into the lock file, so a second writer can name it.

    Raises:
        StageBusyError: another live process holds it; the message names its pid.
    """
    from filelock import FileLock, Timeout

    path = lock_path(name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=0, mode=0o644, on_acquired=_write_pid)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = path.read_text(errors="replace").strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise StageBusyError(
            f"{name}: already running in pid {holder}, writing the same outputs; "
            f"wait for it to finish or stop it (lock {path})"
        ) from None
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.truncate(path, 0)
        lock.release()


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
