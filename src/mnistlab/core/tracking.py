"""MLflow tracking for stages: one run per executed stage, under one parent run per
pipeline execution, in the project's own store.

This is the only library module that touches MLflow (``core/outputs.py`` goes through
:class:`StageRun`); stage modules use :func:`stage_run` and nothing else. MLflow is
imported lazily so stages that fail early (bad params) pay nothing for it.

**One parent per execution.** Every stage run that DVC starts is a child (tag
``mlflow.parentRunId``) of one parent run per pipeline execution: one ``dvc repro``,
one ``dvc exp run``, one queued experiment. The parent is named after the experiment
(``DVC_EXP_NAME``) or, for a plain ``dvc repro``, ``<commit>-params-<digest>`` (the
short commit and a digest of ``params.yaml``). Stages of one execution find it by its
*execution key*: host, boot id, pid and start time of the nearest ``dvc`` process
above the stage (:func:`mnistlab.core.procs.dvc_ancestor`: ``dvc repro``, ``dvc exp
run``, or the ``dvc exp exec-run`` that runs one queued experiment), tagged
``execution`` on the parent. The first stage creates it while holding an exclusive
file lock (every stage of one execution runs on the dvc process's host, so a local
lock serialises them whatever the store); should two appear anyway, each stage picks
the oldest and a creator that lost deletes its own. The parent carries the full params
(flattened), the commit, the experiment name and a few headline metrics that stages
push (:meth:`StageRun.log_summary`). Its status follows the children: RUNNING while
one runs, FINISHED with the end time of the latest child, and FAILED (KILLED) for good
once a child failed (was killed). A stage run by hand, with no dvc above it, has no
parent.

**Liveness.** Each run is tagged with ``host``, ``pid`` and ``pid_start``; when a stage
starts, runs of the same stage left RUNNING on this host by a process that is gone
(SIGKILL, power loss) are marked KILLED, and their parent with them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mnistlab.core import procs
from mnistlab.core.config import flatten
from mnistlab.core.errors import TrackingError

log = logging.getLogger(__name__)

EXPERIMENT = "mnistlab"
DB_NAME = "mlflow.db"
# The kind MLflow 3 gives classic training experiments (runs, metrics, models).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
PARENT_TAG = "mlflow.parentRunId"
WORKSPACE_ALIAS = "workspace"  # the registry alias of models the workspace pipeline trains
DATASET_NAME = "mnist"
CHECKPOINT_TAG = "checkpoint_sha256"  # on logged models: which checkpoint file they are
FAILED_STATES = ("FAILED", "KILLED")


def find_root(start: str | Path | None = None) -> Path:
    """The project root: the nearest ancestor holding ``dvc.yaml`` (else ``start``)."""
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return here


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


def project_root(env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> Path:
    """``DVC_ROOT`` when DVC runs the stage (the real repo, even for queued experiments
    running in a temp copy), else the project root above ``cwd``."""
    env = os.environ if env is None else env
    return (Path(env["DVC_ROOT"]) if env.get("DVC_ROOT") else find_root(cwd)).resolve()


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
    import fcntl

    lock_path = _lock_path(uri)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def git_commit(cwd: str | Path | None = None) -> str:
    """The full commit hash checked out at ``cwd`` ('unknown' outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def numeric_items(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested metrics to ``{"a.b": float}``, keeping only finite numbers."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(numeric_items(value, full))
        elif (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            out.update({f"{full}.{i}": float(v) for i, v in enumerate(value)})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                out[full] = float(value)
    return out


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (how evaluate finds the model that train logged)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- executions


@dataclasses.dataclass(frozen=True)
class Execution:
    """One pipeline execution: the parent run's name and what identifies its dvc process.

    Attributes:
        key: ``<host>/<boot id>/<pid>/<start>`` of the dvc process, shared by its stages.
    """

    name: str
    key: str
    host: str
    pid: int
    start: int


def repro_name(root: str | Path) -> str:
    """Parent-run name of a plain ``dvc repro``: short commit + digest of params.yaml."""
    try:
        digest = hashlib.sha256((Path(root) / "params.yaml").read_bytes()).hexdigest()[:8]
    except OSError:
        digest = "none"
    return f"{git_commit(root)[:7]}-params-{digest}"


def find_execution(
    env: Mapping[str, str] | None = None, cwd: str | Path | None = None
) -> Execution | None:
    """The pipeline execution that runs this process, or None without a dvc ancestor."""
    env = os.environ if env is None else env
    dvc = procs.dvc_ancestor()
    if dvc is None:
        return None
    name = env.get("DVC_EXP_NAME") or repro_name(find_root(cwd))
    host = socket.gethostname()
    key = f"{host}/{procs.boot_id()[:8]}/{dvc.pid}/{dvc.start}"
    return Execution(name=name, key=key, host=host, pid=dvc.pid, start=dvc.start)


# --------------------------------------------------------------------------- datasets


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """MNIST as an MLflow dataset: where it was read and a digest of its files' MD5s."""

    name: str
    source: str
    digest: str
    md5: dict[str, str]


def mnist_dataset(raw_dir: str | Path, cwd: str | Path | None = None) -> DatasetInfo:
    """The dataset a stage reads from ``raw_dir``, already MD5-verified by ``load_mnist``.

    The source is the directory in the real repo (``DVC_ROOT``), also for a queued
    experiment that read a temp copy of it; the digest is an MD5 of the four files'
    MD5s, so the same bytes give the same digest wherever they were read.
    """
    from mnistlab.core.mnist import MNIST_FILES

    raw = Path(raw_dir).resolve()
    with contextlib.suppress(ValueError):
        raw = project_root(cwd=cwd) / raw.relative_to(find_root(cwd))
    md5 = {f.name: f.md5 for f in MNIST_FILES}
    digest = hashlib.md5("".join(f"{k}:{v}\n" for k, v in md5.items()).encode()).hexdigest()
    return DatasetInfo(name=DATASET_NAME, source=str(raw), digest=digest, md5=md5)


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


# --------------------------------------------------------------------------- stage runs


class StageRun:
    """Handle on the active MLflow run of one stage."""

    def __init__(
        self, store: _Store, run_id: str, stage: str, parent_id: str | None = None
    ) -> None:
        self._store = store
        self._mlflow = store.mlflow
        self.run_id = run_id
        self.stage = stage
        self.parent_id = parent_id
        self.model_id: str | None = None  # the logged model metrics are linked to
        self.dataset: Any = None  # the mlflow dataset metrics are linked to

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Log a (nested) metrics dict, the same one the stage writes as JSON.

        After :meth:`use_model` / :meth:`log_dataset` they are linked to that logged
        model and dataset.
        """
        items = numeric_items(metrics)
        if not items:
            return
        if self.model_id is None and self.dataset is None:
            self._mlflow.log_metrics(items)
        else:  # by run id: MLflow then sees the inputs logged so far and adds none twice
            self._mlflow.log_metrics(
                items, run_id=self.run_id, model_id=self.model_id, dataset=self.dataset
            )

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        """Push a few headline numbers to the parent run (``test_accuracy.cnn``)."""
        if self.parent_id is None or not metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        self._store.client.log_batch(self.parent_id, metrics=batch, synchronous=True)

    def log_series(self, name: str, steps: list[int], values: list[float]) -> None:
        """Log one step series (e.g. training loss per iteration) in a single batch."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [
            Metric(name, float(v), ts, int(s))
            for s, v in zip(steps, values, strict=True)
            if math.isfinite(float(v))
        ]
        client = self._store.client
        for i in range(0, len(batch), 1000):  # the server's batch limit
            client.log_batch(self.run_id, metrics=batch[i : i + 1000], synchronous=True)

    def log_artifacts(self, paths: list[str | Path], artifact_path: str | None = None) -> None:
        for path in paths:
            path = Path(path)
            if path.is_dir():
                self._mlflow.log_artifacts(str(path), artifact_path=artifact_path)
            elif path.is_file():
                self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dataset(self, raw_dir: str | Path, context: str) -> DatasetInfo:
        """Log MNIST as this run's input (``training``, ``evaluation``); link later metrics.

        The dataset's source is the raw directory and its digest comes from the four
        files' MD5s, which are also tags of the input.
        """
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        info = mnist_dataset(raw_dir)
        with warnings.catch_warnings():  # "file" maps to two equal local source classes
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(Path(info.source).as_uri())
        self.dataset = MetaDataset(source, name=info.name, digest=info.digest)
        tags = {f"md5.{k}": v for k, v in info.md5.items()}
        self._mlflow.log_input(self.dataset, context=context, tags=tags)
        return info

    def log_model(self, model: Any, registered_name: str, checkpoint: str | Path) -> str:
        """Log a torch model (exported in eval mode), register it, alias the new version.

        MLflow's default pt2 format exports the graph with torch.export: a model exported
        in train mode would serve batch-dependent BatchNorm predictions, so it is put in
        eval mode first. Inputs are raw pixels ``(B, 1, 28, 28)`` in [0, 1]. The logged
        model is tagged with the sha256 of ``checkpoint`` (the file the stage wrote), by
        which evaluate finds it; the version gets alias ``workspace``, or the experiment's
        name under ``dvc exp run``.

        Returns:
            The logged model's id.
        """
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        model = model.eval().cpu()
        example = np.full((2, 1, 28, 28), 0.5, dtype=np.float32)
        with torch.inference_mode():
            output = model(torch.from_numpy(example)).numpy()
        tags = {CHECKPOINT_TAG: file_sha256(checkpoint), "stage": self.stage}
        if self.dataset is not None:
            tags |= {"dataset.name": self.dataset.name, "dataset.digest": self.dataset.digest}
        info = self._mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=example,
            signature=infer_signature(example, output),
            registered_model_name=registered_name,
            tags=tags,
        )
        version = info.registered_model_version
        if version is not None:
            client = self._store.client
            for key, value in tags.items():
                client.set_model_version_tag(registered_name, str(version), key, value)
            alias = os.environ.get("DVC_EXP_NAME") or WORKSPACE_ALIAS
            try:
                client.set_registered_model_alias(registered_name, alias, str(version))
                log.info("registered %s version %s as @%s", registered_name, version, alias)
            except Exception as err:  # noqa: BLE001 - e.g. an experiment named like "v3"
                log.warning("no alias %r for %s: %s", alias, registered_name, _first_line(err))
        return info.model_id

    def use_model(self, checkpoint: str | Path) -> str | None:
        """Link this run's later metrics to the logged model that produced ``checkpoint``.

        Train tags each logged model with its checkpoint's sha256; the newest model with
        this one's is taken (identical bytes are the same model). None, with a warning,
        when no such model is in the store (e.g. trained against another store).
        """
        sha = file_sha256(checkpoint)
        models = self._mlflow.search_logged_models(
            experiment_ids=[self._store.experiment_id],
            filter_string=f"tags.{CHECKPOINT_TAG} = '{sha}'",
            order_by=[{"field_name": "creation_time", "ascending": False}],
            max_results=1,
            output_format="list",
        )
        if not models:
            log.warning("no logged model has checkpoint %s (sha256 %s)", checkpoint, sha[:12])
            return None
        self.model_id = models[0].model_id
        self.set_tags({"model_id": self.model_id, CHECKPOINT_TAG: sha})
        return self.model_id

    @property
    def mlflow(self) -> Any:
        """The mlflow module, for the few calls a stage needs directly."""
        return self._mlflow


def _prepare_env() -> None:
    # Fail fast on an unreachable server instead of retrying for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def _run_tags(name: str, host: str, parent_id: str | None, ex: Execution | None) -> dict:
    me = procs.proc_info(os.getpid())
    tags = {
        "stage": name,
        "run_kind": "stage",
        "git_commit": git_commit(),
        "host": host,
        "pid": str(os.getpid()),
    }
    if me is not None:
        tags["pid_start"] = str(me.start)
        if (age := procs.age_seconds(me)) is not None:
            tags["startup_seconds"] = f"{age:.2f}"
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


@contextlib.contextmanager
def stage_run(stage: str, params: Mapping[str, Any]) -> Iterator[StageRun]:
    """Open the MLflow run of one executed stage, as a child of its execution's parent.

    Args:
        stage: the stage name used when DVC does not set ``DVC_STAGE`` (a run by hand).
        params: the params sections the stage reads, e.g. ``{"seed": 42, "train": ...}``;
            logged flattened (``train.lr``).

    Raises:
        TrackingError: the store cannot be reached or written (raised before the stage
            computes).

    The run ends FINISHED on success, FAILED when the stage raises, KILLED when it
    is interrupted (SIGINT/SIGTERM); one killed outright is marked KILLED by the next
    run of the same stage on this host.
    """
    _prepare_env()
    uri = tracking_uri()
    try:
        store = _Store(uri)
    except Exception as err:  # noqa: BLE001 - any failure here means the store is unusable
        reason = _first_line(err)
        raise TrackingError(f"MLflow tracking store {uri} is unreachable: {reason}") from None
    store.check_writable()

    name = os.environ.get("DVC_STAGE") or stage
    host = socket.gethostname()
    try:
        store.sweep_stale(name, host)
        ex = find_execution()
        parent_id = store.parent_for(ex, find_root()) if ex else None
        run = store.mlflow.start_run(
            experiment_id=store.experiment_id,
            run_name=name,
            tags=_run_tags(name, host, parent_id, ex),
        )
    except Exception as err:  # noqa: BLE001 - the first writes tell whether it is writable
        reason = _first_line(err)
        raise TrackingError(f"MLflow tracking store {uri} is not writable: {reason}") from None
    log.info("MLflow run %s (%s) in %s", run.info.run_id, name, uri)
    status = "FINISHED"
    try:
        flat = {}
        for section, value in params.items():
            nested = hasattr(value, "model_dump")
            flat.update(flatten(value, section) if nested else {section: value})
        if flat:
            store.mlflow.log_params({k: str(v) for k, v in flat.items()})
        yield StageRun(store, run.info.run_id, name, parent_id)
    except (KeyboardInterrupt, SystemExit) as err:
        status = "KILLED" if not isinstance(err, SystemExit) or err.code else "FINISHED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        store.mlflow.end_run(status=status)
        if parent_id is not None:
            store.child_ended(parent_id, status)
