"""What a scratch repo's MLflow store holds, and waiting for local servers.

Each pipeline execution logs one parent run (tag ``run_kind`` = ``pipeline``) holding
its stage runs (``run_kind`` = ``stage``); tests that count what a stage logged read the
stage runs, and the parents are tested in ``test_tracking_pipeline.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

EXPERIMENT = "mnistlab"


def all_runs(repo: Path) -> list[Any]:
    """Every run of the project's experiment in ``repo/mlflow.db``, oldest first."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo}/mlflow.db")
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"]
    )


def is_parent(run: Any) -> bool:
    """Whether ``run`` is the parent run of a pipeline execution."""
    return run.data.tags.get("run_kind") == "pipeline"


def stage_runs(repo: Path, name: str | None = None) -> list[Any]:
    """The stage runs (not the executions' parents), oldest first; only ``name``'s if given."""
    runs = [r for r in all_runs(repo) if not is_parent(r)]
    return runs if name is None else [r for r in runs if r.info.run_name == name]


def parent_runs(repo: Path) -> list[Any]:
    """The parent runs, one per pipeline execution, oldest first."""
    return [r for r in all_runs(repo) if is_parent(r)]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Wait until ``url`` answers, failing at once if the server ``proc`` exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read()[-3000:] if proc.stderr else ""
            raise AssertionError(f"server exited {proc.returncode}: {err}")
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    raise AssertionError(f"{url} did not come up in {timeout}s")


def warm_servers(dvc_pid: int | None = None, *, runtime_dir: Path | None = None) -> list[int]:
    """Live warm servers of the calling test, never every one on the machine: another
    suite running at once (CI beside a developer) has servers of its own.

    A server's command line is ``python -m mnistlab.harness.warm SOCKET DVC_PID DVC_START``
    (see mnistlab.harness.warm). A test names its own by either, or both:

    dvc_pid: the DVC process the test started (the pid a server serves, not any argument
        that happens to read the same).
    runtime_dir: the private ``XDG_RUNTIME_DIR`` the test gave its stages: a server's
        socket lies beneath it.
    """
    if dvc_pid is None and runtime_dir is None:
        raise TypeError("warm_servers: say whose servers (dvc_pid or runtime_dir)")
    under = os.path.realpath(runtime_dir) + os.sep if runtime_dir is not None else None
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []  # None: gone, or not ours to read
        at = next(
            (i for i in range(len(argv) - 1) if argv[i : i + 2] == ["-m", "mnistlab.harness.warm"]),
            None,
        )
        if at is None or len(argv) < at + 5:
            continue
        sock, pid = argv[at + 2], argv[at + 3]
        if dvc_pid is not None and pid != str(dvc_pid):
            continue
        if under is not None and not os.path.realpath(sock).startswith(under):
            continue
        pids.append(proc.pid)
    return pids
