"""The MLflow store of the stages: its location, experiment, parent runs and liveness.

:class:`_Store` is the MLflow side of one stage (see :mod:`mnistlab.harness.tracking` for
how parent runs and liveness work); :func:`tracking_uri` says where the store is.

Environment:

``MNISTLAB_SQLITE_BUSY_TIMEOUT``
    Seconds a stage waits for a SQLite tracking store that another process holds locked
    before its MLflow call fails with ``database is locked`` (one line; see
    :mod:`mnistlab.harness.runtime`). Unset, nothing changes: MLflow's own 20 s (the
    ``PRAGMA busy_timeout = 20000`` it sets on every session). The tests set it short to
    meet a locked store in seconds. A value that is not a non-negative number of seconds
    fails the stage in one line before it computes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mnistlab.core.config import flatten
from mnistlab.core.errors import TrackingError
from mnistlab.harness import procs
from mnistlab.harness.provenance import Execution, git_commit, project_root

log = logging.getLogger(__name__)

EXPERIMENT = "mnistlab"
DB_NAME = "mlflow.db"
# The kind MLflow 3 gives classic training experiments (runs, metrics, models).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
PARENT_TAG = "mlflow.parentRunId"
# Set by ops.sweep for each variant: the sweep's own run, parent of the variant's parent.
SWEEP_RUN_ENV = "MNISTLAB_SWEEP_RUN_ID"
FAILED_STATES = ("FAILED", "KILLED")


def tracking_uri(env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> str:
    """Resolve the MLflow URI.

    ``MLFLOW_TRACKING_URI`` if set; else ``sqlite:///<root>/mlflow.db`` where root is
    ``DVC_ROOT`` (set by DVC, and pointing at the real repo even when a queued
    experiment runs in a temp copy), else the project root above ``cwd``.
    """
    env = os.environ if env is None else env
    if env.get("MLFLOW_TRACKING_URI"):
        return env["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{project_root(env, cwd) / DB_NAME}"


def _lock_path(uri: str) -> Path:
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///") + "-lock")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"mnistlab-mlflow-{digest}.lock"


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise set-up steps between stages running at once on this host.

    The first stage to touch a new SQLite store creates its tables, and two doing it
    at once collide (``No such constraint``); two stages of one execution must not
    both create its parent run. An exclusive lock (beside a SQLite database, else in
    the temp dir, per URI) makes the second wait until the first is done.
    """
    from filelock import FileLock

    lock_path = _lock_path(uri)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path):
        yield


# --------------------------------------------------------------------------- the store


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _local_path(location: str) -> Path | None:
    """A local directory from an artifact location (``file:`` URI or path), else None."""
    from urllib.parse import unquote, urlparse

    if location.startswith("file:"):
        return Path(unquote(urlparse(location).path))
    if location.startswith("/"):
        return Path(location)
    return None


def _probe_dir(path: Path) -> None:
    """Create ``path`` and a file in it (as root, ``os.access`` says yes to everything)."""
    path.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mnistlab-write-check-", dir=path)
    os.close(fd)
    os.unlink(tmp)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _Store:
    """The MLflow side of one stage: client, experiment, its parent run and liveness."""

    def __init__(self, uri: str) -> None:
        import mlflow

        self.uri = uri
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        with _store_lock(uri):  # the client creates a new SQLite store's tables
            self.client = mlflow.MlflowClient(uri)
            self.experiment = self._ensure_experiment()
        self.experiment_id = self.experiment.experiment_id

    def _ensure_experiment(self) -> Any:
        """The project's experiment, created with artifacts beside a SQLite database.

        Without an explicit location MLflow puts artifacts under ``./mlruns`` of the
        current directory, which for a queued DVC experiment is a temp copy that is
        deleted.
        """
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:"):
                location = (project_root() / "mlruns").as_uri()
            try:
                self.client.create_experiment(
                    EXPERIMENT, artifact_location=location, tags=EXPERIMENT_TAGS
                )
            except Exception:  # noqa: BLE001 - another host's stage created it first
                if self.client.get_experiment_by_name(EXPERIMENT) is None:
                    raise
            exp = self.client.get_experiment_by_name(EXPERIMENT)
        for key, value in EXPERIMENT_TAGS.items():
            if exp.tags.get(key) != value:
                self.client.set_experiment_tag(exp.experiment_id, key, value)
        self.mlflow.set_experiment(experiment_id=exp.experiment_id)
        return exp

    def check_writable(self) -> None:
        """Probe the database directory and a local artifact root before any compute.

        Raises:
            TrackingError: one line naming the URI and what cannot be written.
        """
        targets = []
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri.removeprefix("sqlite:///"))
            targets.append(("database directory", db.parent))
        artifacts = _local_path(self.experiment.artifact_location or "")
        if artifacts is not None:
            targets.append(("artifact directory", artifacts))
        for what, path in targets:
            try:
                _probe_dir(path)
            except OSError as err:
                reason = err.strerror or _first_line(err)
                raise TrackingError(
                    f"MLflow tracking store {self.uri} is not writable: {what} {path}: {reason}"
                ) from None

    # ------------------------------------------------------------------ liveness

    def sweep_stale(self, name: str, host: str) -> None:
        """Mark runs of stage ``name`` left RUNNING by a dead process on ``host`` KILLED."""
        if "'" in name or "'" in host:
            return
        runs = self.client.search_runs(
            [self.experiment_id],
            f"attributes.run_name = '{name}' AND attributes.status = 'RUNNING' "
            f"AND tags.host = '{host}'",
            max_results=200,
        )
        for run in runs:
            pid = _int(run.data.tags.get("pid"))
            if pid is None or pid == os.getpid():
                continue
            if procs.is_alive(pid, _int(run.data.tags.get("pid_start"))):
                continue
            self.client.set_terminated(run.info.run_id, "KILLED")
            log.warning(
                "MLflow run %s (%s) was left RUNNING by pid %d, which is gone: marked KILLED",
                run.info.run_id,
                name,
                pid,
            )
            if parent := run.data.tags.get(PARENT_TAG):
                self.child_ended(parent, "KILLED")

    # ------------------------------------------------------------------ parents

    def _parents(self, key: str) -> list[Any]:
        return list(
            self.client.search_runs(
                [self.experiment_id],
                f"tags.execution = '{key}' AND tags.run_kind = 'pipeline'",
                max_results=50,
                order_by=["attributes.start_time ASC"],
            )
        )

    def _create_parent(self, ex: Execution, root: Path) -> str:
        from mlflow.entities import Param

        tags = {
            "run_kind": "pipeline",
            "execution": ex.key,
            "host": ex.host,
            "pid": str(ex.pid),
            "pid_start": str(ex.start),
            "git_commit": git_commit(),
        }
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
        if os.environ.get(SWEEP_RUN_ENV):  # a variant of a sweep (ops.sweep): nest under it
            tags[PARENT_TAG] = os.environ[SWEEP_RUN_ENV]
        run = self.client.create_run(self.experiment_id, run_name=ex.name, tags=tags)
        self.client.log_batch(
            run.info.run_id,
            params=[Param(k, str(v)) for k, v in _all_params(root).items()],
            synchronous=True,
        )
        log.info("MLflow parent run %s (%s) for this pipeline execution", run.info.run_id, ex.name)
        return run.info.run_id

    def parent_for(self, ex: Execution, root: Path) -> str:
        """The parent run of execution ``ex``, created if this is its first stage (with
        every param of ``root/params.yaml``)."""
        with _store_lock(self.uri):
            found = self._parents(ex.key)
            created = None
            if not found:
                created = self._create_parent(ex, root)
                found = self._parents(ex.key)  # a racing creator's run shows up here too
            oldest = min(found, key=lambda r: (r.info.start_time, r.info.run_id))
            if created is not None and created != oldest.info.run_id:
                self.client.delete_run(created)
            if oldest.info.status == "FINISHED":
                self.client.update_run(oldest.info.run_id, status="RUNNING")
        return oldest.info.run_id

    def child_ended(self, parent_id: str, status: str) -> None:
        """Move the parent's end time to now; a failed (killed) child fails it for good."""
        current = self.client.get_run(parent_id).info.status
        if current in FAILED_STATES:
            new = current
        else:
            new = status if status in FAILED_STATES else "FINISHED"
        self.client.set_terminated(parent_id, new)


def _all_params(root: Path) -> dict[str, Any]:
    """Every key of ``params.yaml``, flattened (``train.lr``); {} when unreadable."""
    from mnistlab.core.config import load_params
    from mnistlab.core.errors import ParamsError

    try:
        return flatten(load_params(root / "params.yaml"))
    except ParamsError as err:
        log.warning("parent run logs no params: %s", err)
        return {}


def _prepare_env() -> None:
    # Fail fast on an unreachable server instead of retrying for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    apply_busy_timeout()


# ------------------------------------------------------------- SQLite's busy timeout

BUSY_TIMEOUT_ENV = "MNISTLAB_SQLITE_BUSY_TIMEOUT"
# What MLflow runs at the start of every session on a SQLite store.
_BUSY_PRAGMA = re.compile(r"\s*PRAGMA\s+busy_timeout\s*=\s*\d+\s*;?\s*", re.IGNORECASE)
_busy_listening = False


def busy_timeout_ms(env: Mapping[str, str] | None = None) -> int | None:
    """``MNISTLAB_SQLITE_BUSY_TIMEOUT`` in milliseconds; None when it is unset or empty.

    Raises:
        TrackingError: the value is not a non-negative number of seconds.
    """
    value = (os.environ if env is None else env).get(BUSY_TIMEOUT_ENV, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise TrackingError(f"{BUSY_TIMEOUT_ENV}={value!r}: not a number of seconds (>= 0)")
    return round(seconds * 1000)


def _set_busy_timeout(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    """Rewrite MLflow's ``PRAGMA busy_timeout`` with the value the environment holds now
    (read at each session, so unsetting it restores MLflow's own at once)."""
    if conn.dialect.name == "sqlite" and _BUSY_PRAGMA.fullmatch(statement):
        try:
            ms = busy_timeout_ms()
        except TrackingError:  # told by apply_busy_timeout; never fail a session here
            ms = None
        if ms is not None:
            statement = f"PRAGMA busy_timeout = {ms};"
    return statement, parameters


def apply_busy_timeout() -> None:
    """Make MLflow's SQLite sessions wait ``MNISTLAB_SQLITE_BUSY_TIMEOUT`` seconds for a
    locked database instead of its own 20, when that variable is set; else do nothing.

    MLflow sets the timeout itself (``PRAGMA busy_timeout = 20000``, at the start of every
    session), so the only way in is to rewrite that statement: a SQLAlchemy listener on
    every engine, added once per process and only once the variable is set.

    Raises:
        TrackingError: the value is not a non-negative number of seconds.
    """
    global _busy_listening
    if busy_timeout_ms() is None or _busy_listening:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "before_cursor_execute", _set_busy_timeout, retval=True)
    _busy_listening = True


def _run_tags(name: str, host: str, parent_id: str | None, ex: Execution | None) -> dict:
    worker = procs.proc_info(os.getpid())  # this process, None without /proc
    launcher = procs.launcher()  # the process a warm worker acts for
    me = launcher or worker
    tags = {
        "stage": name,
        "run_kind": "stage",
        "git_commit": git_commit(),
        "host": host,
        "pid": str(os.getpid()),
        "warm": str(launcher is not None).lower(),
    }
    if worker is not None:
        tags["pid_start"] = str(worker.start)
    if me is not None:
        tags["startup_seconds"] = (
            f"{procs.age_seconds(me):.2f}"  # from the launcher's start when warm
        )
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if parent_id is not None and ex is not None:
        tags[PARENT_TAG] = parent_id
        tags["execution"] = ex.key
    if "torch" in sys.modules:  # the stage applied its `threads` param already
        torch = sys.modules["torch"]
        tags["torch_threads"] = str(torch.get_num_threads())
        tags["interop_threads"] = str(torch.get_num_interop_threads())
    return tags
