"""What a scratch repo's MLflow store holds, and waiting for local servers.

Each pipeline execution logs one parent run (tag ``run_kind`` = ``pipeline``) holding
its stage runs (``run_kind`` = ``stage``); tests that count what a stage logged read the
stage runs, and the parents are tested in ``test_tracking_pipeline.py``.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

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


def warm_servers(dvc_pid: int | None = None) -> list[int]:
    """Live warm servers (``python -m mnistlab.harness.warm PATH PID START``, see
    mnistlab.harness.warm), all of them or only those serving the DVC process ``dvc_pid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone
            continue
        if b"mnistlab.harness.warm" in argv and (dvc_pid is None or str(dvc_pid).encode() in argv):
            pids.append(int(entry.name))
    return pids
