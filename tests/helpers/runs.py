"""What a scratch repo's MLflow store holds, and starting local servers on free ports.

Each pipeline execution logs one parent run (tag ``run_kind`` = ``pipeline``) holding
its stage runs (``run_kind`` = ``stage``); tests that count what a stage logged read the
stage runs, and the parents are tested in ``test_tracking_pipeline.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ops.team_stack import free_port  # one copy: a loopback port free a moment ago

EXPERIMENT = "mnistlab"


def all_runs(repo: Path) -> list[Any]:
    """Every run of the project's experiment in ``repo/mlflow.db``, oldest first.

    Reading never creates the store, and waits while a stage creates it: MLflow's
    first client of a new SQLite file creates its tables, and two doing that at once
    make one of them fail (a test polling for a stage's run made that stage exit 1).
    """
    import mlflow

    from mnistlab.harness.tracking_store import _store_lock

    db = repo / "mlflow.db"
    if not db.exists():
        return []
    uri = f"sqlite:///{db}"
    with _store_lock(uri):
        client = mlflow.MlflowClient(uri)
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


# How uvicorn (`make serve`, `mlflow ui`) and Python's socket servers say it: a port that
# was free when chosen was taken before the server bound it.
ADDRESS_IN_USE = re.compile(r"address already in use|errno 98\b", re.IGNORECASE)


@dataclass(frozen=True)
class Server:
    """A local HTTP server that a test started, in a process group of its own."""

    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT
    log: Path  # its stderr

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM to the whole group (make's child, uvicorn's workers), SIGKILL if it
        lingers past ``timeout``."""
        _kill_group(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc, signal.SIGKILL)
            self.proc.wait(timeout=30)


def _kill_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _listens(proc: subprocess.Popen, port: int) -> bool:
    """Whether ``proc`` or one of its descendants listens on ``port``."""
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for p in tree:
        try:
            conns = p.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
            return True
    return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def start_server(
    command: Callable[[int], list[str]],
    ready: str,
    log: Path,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    tries: int = 5,
    timeout: float = 180,
    ports: Iterable[int] | None = None,
) -> Server:
    """Run ``command(port)`` on a free loopback port until the path ``ready`` answers.

    Up means: the process tree listens on the port and ``ready`` answers 2xx (so a
    program that took the port meanwhile cannot pass for the server). A port chosen free
    can be taken before the server binds it (by another worker's server, or anything
    else): if the server exits saying its address is in use, it is started again on a
    new port, ``tries`` times in all. Any other exit fails at once, with its stderr.

    Args:
        log: the file that receives the server's stderr (a file, not a pipe: a pipe
            nobody reads would fill and stall a long-lived server).
        ports: the ports to try, in order (tests of this function); by default a
            fresh :func:`free_port` each time (it may be taken between choosing and binding).
    """
    candidates = iter(ports) if ports is not None else (free_port() for _ in range(tries))
    exits = []
    for port in itertools.islice(candidates, tries):
        with log.open("w") as err:
            proc = subprocess.Popen(
                command(port),
                cwd=cwd,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # stop() ends its children with it
            )
        server = Server(proc, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if _listens(proc, port) and _answers(server.url + ready):
                return server
            if time.monotonic() > deadline:
                server.stop()
                raise AssertionError(
                    f"{server.url}{ready} did not come up in {timeout}s: {log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        _kill_group(proc, signal.SIGTERM)  # anything it left behind
        text = log.read_text()
        if not ADDRESS_IN_USE.search(text):
            raise AssertionError(f"server exited {proc.returncode}: {text[-3000:]}")
        exits.append(port)
    raise AssertionError(f"every port tried was in use: {exits}")


@contextlib.contextmanager
def running_server(
    command: Callable[[int], list[str]], ready: str, log: Path, **kwargs: Any
) -> Iterator[Server]:
    """:func:`start_server`, stopped on leaving."""
    server = start_server(command, ready, log, **kwargs)
    try:
        yield server
    finally:
        server.stop()


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
