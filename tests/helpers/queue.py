"""Waiting for DVC's experiment queue on events, not on `dvc queue status` every second.

Each `dvc queue status` is a DVC start-up (about a second of CPU) taken from the queue
workers it is waiting for. What changes when a queued experiment ends is cheap to see: a
successful one adds its ref under ``refs/exps`` (one `git for-each-ref`), and the
workers (``dvc exp queue-worker``, DVC's temporary Celery workers) exit once the queue is
empty, failed tasks included. DVC is asked once, at the end, for the final status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psutil


def exp_refs(repo: Path, run: Callable[..., object]) -> set[str]:
    """Names of the experiments under ``refs/exps`` of ``repo``."""
    out = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=repo).stdout
    return {ref.rsplit("/", 1)[-1] for ref in out.split()}


def queue_workers(repo: Path) -> list[psutil.Process]:
    """DVC queue workers of ``repo`` (they run in a folder under its ``.dvc/tmp``)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmd, cwd = proc.info["cmdline"] or [], proc.info["cwd"]
        if "queue-worker" in cmd and cwd and Path(cwd).is_relative_to(repo):
            found.append(proc)
    return found


def wait_for_queue(
    repo: Path, names: list[str], run: Callable[..., object], timeout: float = 1800
) -> str:
    """Wait until every experiment of ``names`` has its ref, or no queue worker is left
    (one failed); then until `dvc queue status` lists nothing queued or running (asked
    every 2 s, normally once). Returns that status."""
    start = time.monotonic()
    deadline = start + timeout
    seen = False  # the workers `dvc queue start` spawned, once they show up
    while time.monotonic() < deadline:
        if set(names) <= exp_refs(repo, run):
            break
        workers = bool(queue_workers(repo))
        seen = seen or workers
        if (seen and not workers) or (not seen and time.monotonic() - start > 60):
            break
        time.sleep(0.5)
    while True:
        status = run(["dvc", "queue", "status"], cwd=repo).stdout
        if ("Queued" not in status and "Running" not in status) or time.monotonic() > deadline:
            return status
        time.sleep(2)
