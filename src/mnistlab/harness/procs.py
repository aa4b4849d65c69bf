"""What a stage can learn about the processes around it (psutil reads ``/proc`` on Linux).

- Which ``dvc`` process runs this stage (:func:`dvc_ancestor`): its pid and start time
  identify one pipeline execution (one ``dvc repro``, one ``dvc exp run``, or one
  queued experiment's ``dvc exp exec-run``), so every stage of it finds the same
  MLflow parent run.
- How many ``dvc queue start -j N`` workers run for a repo (:func:`queue_workers`).
  DVC sets no environment variable for that: each worker is a process
  ``dvc exp queue-worker dvc-exp-<hash>-<n>@localhost``, where ``<hash>`` is the first
  six hex digits of the sha256 of ``<repo>/.dvc/tmp/exps/celery``; a worker runs one
  experiment at a time and exits after ~10 s idle.
- Whether a recorded pid still runs (:func:`is_alive`), guarding against pid reuse
  with the start time.

A process whose details cannot be read is "unknown": no ancestor, no worker, alive.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

WORKER_CMD = ("exp", "queue-worker")


@dataclasses.dataclass(frozen=True)
class ProcInfo:
    """One process: pid, parent pid, start time and command line.

    Attributes:
        start: when it started, in milliseconds since boot (Linux: ``/proc/<pid>/stat``'s
            start time; elsewhere milliseconds since the epoch, psutil's
            ``create_time``); with the pid it names the process uniquely.
    """

    pid: int
    ppid: int
    start: int
    argv: tuple[str, ...]


def proc_info(pid: int) -> ProcInfo | None:
    """The process ``pid``, or None when it does not exist or cannot be read."""
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            return ProcInfo(pid=pid, ppid=p.ppid(), start=_start(p), argv=tuple(p.cmdline()))
    except (psutil.Error, OSError):
        return None


def _millis(seconds: float) -> int:
    return round(seconds * 1000)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0
_BOOT_CLOCK = Path("/proc/self/stat").is_file() and hasattr(time, "CLOCK_BOOTTIME") and _TICKS > 0


def _start(p: psutil.Process) -> int:
    """When ``p`` started: milliseconds since boot, from ``/proc/<pid>/stat`` (field 22,
    clock ticks), where Linux has it; else milliseconds since the epoch.

    Not psutil's ``create_time``: that is boot time + ticks, and the boot time it reads
    is "now - uptime", which moves whenever the wall clock is stepped (a VM resumed
    from a snapshot, NTP). A stage would then take its own ``dvc`` for a new process
    with the same pid, decide it is gone and stop itself (seen on this project's VMs).
    """
    if _BOOT_CLOCK:
        try:
            stat = Path(f"/proc/{p.pid}/stat").read_text()
            ticks = int(stat.rsplit(")", 1)[1].split()[19])  # after "(comm)": field 3 on
            return round(ticks * 1000 / _TICKS)
        except (OSError, ValueError, IndexError):
            pass
    return _millis(p.create_time())


_origin: ProcInfo | None = None


def adopt(launcher: ProcInfo) -> None:
    """Act for ``launcher``: a warm worker (:mod:`mnistlab.harness.warm`) runs the stage
    that process was started for, so its ancestors and age are the stage's."""
    global _origin
    _origin = launcher


def launcher() -> ProcInfo | None:
    """The launcher a warm worker acts for (:func:`adopt`); None in a cold stage."""
    return _origin


def stage_process() -> ProcInfo | None:
    """The process the stage was started as: the launcher a warm worker acts for, else
    this one (None without /proc)."""
    return _origin or proc_info(os.getpid())


def ancestors(pid: int | None = None) -> Iterator[ProcInfo]:
    """The parent of ``pid`` (default: the stage's process), its parent, ... up to pid 1."""
    if pid is None:
        pid = _origin.pid if _origin is not None else os.getpid()
    info = proc_info(pid)
    seen: set[int] = set()
    while info is not None and info.ppid > 0 and info.ppid not in seen:
        seen.add(info.ppid)
        info = proc_info(info.ppid)
        if info is not None:
            yield info


def dvc_args(argv: tuple[str, ...]) -> tuple[str, ...] | None:
    """The arguments after ``dvc`` when ``argv`` runs DVC, else None.

    DVC runs as ``dvc ...``, ``python /path/bin/dvc ...`` (its console script, as the
    kernel shows it) or ``python -m dvc ...``.
    """
    if not argv:
        return None
    if Path(argv[0]).name == "dvc":
        return argv[1:]
    if Path(argv[0]).name.startswith("python"):
        if len(argv) > 1 and Path(argv[1]).name == "dvc":
            return argv[2:]
        if argv[1:3] == ("-m", "dvc"):
            return argv[3:]
    return None


def dvc_ancestor(pid: int | None = None) -> ProcInfo | None:
    """The nearest ancestor running DVC: the process that runs this stage's pipeline."""
    for info in ancestors(pid):
        if dvc_args(info.argv) is not None:
            return info
    return None


def boot_id() -> str:
    """This boot (pids repeat across boots): the kernel's boot id where Linux has it, else
    the boot time in seconds; '' when unknown."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        pass
    try:
        return str(round(psutil.boot_time()))
    except (psutil.Error, OSError):
        return ""


def is_alive(pid: int, start: int | None = None) -> bool:
    """Whether ``pid`` runs on this host and, given ``start``, is the process that did."""
    try:
        p = psutil.Process(pid)
        return start is None or _start(p) == start
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):
        return True  # cannot tell: assume alive rather than mark a live run killed


def worker_node(argv: tuple[str, ...]) -> str | None:
    """The celery node name when ``argv`` is a DVC queue worker, else None."""
    args = dvc_args(argv)
    if args is None or tuple(args[:2]) != WORKER_CMD or len(args) < 3:
        return None
    return args[2]


def queue_prefixes(root: str | Path) -> set[str]:
    """Node-name prefixes (``dvc-exp-<hash>-``) of the queue workers of the repo at ``root``."""
    out = set()
    for path in {str(root), os.path.realpath(root)}:
        wdir = os.path.join(path, ".dvc", "tmp", "exps", "celery")
        out.add(f"dvc-exp-{hashlib.sha256(wdir.encode()).hexdigest()[:6]}-")
    return out


def _prefix(node: str) -> str:
    return node.rsplit("-", 1)[0] + "-"


def queue_workers(root: str | Path | None = None) -> tuple[int, bool]:
    """How many DVC queue workers run for this stage's repo, and whether one runs it.

    The repo is the one whose worker is an ancestor of this process when there is
    one; else the one at ``root``.
    """
    prefixes: set[str] = set()
    inside = False
    for info in ancestors():
        node = worker_node(info.argv)
        if node:
            prefixes, inside = {_prefix(node)}, True
            break
    if not prefixes and root is not None:
        prefixes = queue_prefixes(root)
    if not prefixes:
        return 0, inside
    nodes = set()
    for p in psutil.process_iter(["cmdline"]):
        node = worker_node(tuple(p.info["cmdline"] or ()))
        if node and _prefix(node) in prefixes:
            nodes.add(node)  # one per worker, however its process shows up
    return len(nodes), inside


def auto_threads(root: str | Path | None = None) -> int:
    """Threads for ``threads: auto``: the cores this process may use, shared fairly.

    The cores are ``os.sched_getaffinity`` (what ``taskset`` or a cpuset allows; a CPU
    quota is not seen), or fewer when ``OMP_NUM_THREADS`` says so (a Ray task of a sweep
    gets its CPUs that way). They are divided by the queue workers running for the repo,
    plus one when this process is not itself run by one of them (a ``dvc repro``
    beside a running queue competes with it); at least 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    budget = os.environ.get("OMP_NUM_THREADS", "")
    if budget.isdigit() and int(budget) > 0:
        cores = min(cores, int(budget))
    workers, inside = queue_workers(root)
    sharers = workers if inside else workers + 1
    return max(1, cores // max(1, sharers))


def age_seconds(info: ProcInfo) -> float:
    """Seconds since the process ``info`` started."""
    now = time.clock_gettime(time.CLOCK_BOOTTIME) if _BOOT_CLOCK else time.time()
    return max(0.0, now - info.start / 1000)
