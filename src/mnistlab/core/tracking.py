"""MLflow tracking for stages: one run per executed stage, in the project's own store.

This is the only library module that touches MLflow; stage modules use
:func:`stage_run` and nothing else. MLflow is imported lazily so stages that
fail early (bad params) pay nothing for it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mnistlab.core.config import flatten
from mnistlab.core.errors import TrackingError

log = logging.getLogger(__name__)

EXPERIMENT = "mnistlab"
DB_NAME = "mlflow.db"


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


@contextlib.contextmanager
def _init_lock(uri: str) -> Iterator[None]:
    """Serialise store set-up between stages running at once (queued experiments).

    The first stage to touch a new SQLite store creates its tables; two doing it at
    once collide (``No such constraint``). An exclusive lock beside the database makes
    the second wait until the first is done.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(uri.removeprefix("sqlite:///") + "-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ensure_experiment(mlflow: Any, uri: str) -> None:
    """Select the project's experiment, creating it with artifacts beside the database.

    Without an explicit location MLflow puts artifacts under ``./mlruns`` of the current
    directory, which for a queued DVC experiment is a temp copy that is deleted.
    """
    if mlflow.get_experiment_by_name(EXPERIMENT) is None and uri.startswith("sqlite:"):
        location = (project_root() / "mlruns").as_uri()
        try:
            mlflow.create_experiment(EXPERIMENT, artifact_location=location)
        except Exception:  # noqa: BLE001 - a concurrent stage created it first
            if mlflow.get_experiment_by_name(EXPERIMENT) is None:
                raise
    mlflow.set_experiment(EXPERIMENT)


def git_commit(cwd: str | Path | None = None) -> str:
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


class StageRun:
    """Handle on the active MLflow run of one stage."""

    def __init__(self, mlflow_module: Any, run_id: str) -> None:
        self._mlflow = mlflow_module
        self.run_id = run_id

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Log a (nested) metrics dict, the same one the stage writes as JSON."""
        items = numeric_items(metrics)
        if items:
            self._mlflow.log_metrics(items)

    def log_series(self, name: str, steps: list[int], values: list[float]) -> None:
        """Log one step series (e.g. training loss per iteration) in a single batch."""
        from mlflow.entities import Metric

        ts = self._now_ms()
        batch = [
            Metric(name, float(v), ts, int(s))
            for s, v in zip(steps, values, strict=True)
            if math.isfinite(float(v))
        ]
        client = self._mlflow.MlflowClient()
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

    def log_model(self, model: Any, registered_name: str) -> None:
        """Log a torch model (exported in eval mode) and register it as ``registered_name``.

        MLflow's default pt2 format exports the graph with torch.export: a model exported
        in train mode would serve batch-dependent BatchNorm predictions, so it is put in
        eval mode first. Inputs are raw pixels ``(B, 1, 28, 28)`` in [0, 1].
        """
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        model = model.eval().cpu()
        example = np.full((2, 1, 28, 28), 0.5, dtype=np.float32)
        with torch.inference_mode():
            output = model(torch.from_numpy(example)).numpy()
        self._mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=example,
            signature=infer_signature(example, output),
            registered_model_name=registered_name,
        )

    @property
    def mlflow(self) -> Any:
        """The mlflow module, for the few calls a stage needs directly (log_model)."""
        return self._mlflow

    @staticmethod
    def _now_ms() -> int:
        import time

        return int(time.time() * 1000)


def _prepare_env() -> None:
    # Fail fast on an unreachable server instead of retrying for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@contextlib.contextmanager
def stage_run(stage: str, params: Mapping[str, Any]) -> Iterator[StageRun]:
    """Open the MLflow run of one executed stage.

    Args:
        stage: the stage name used when DVC does not set ``DVC_STAGE`` (a run by hand).
        params: the params sections the stage reads, e.g. ``{"seed": 42, "train": ...}``;
            logged flattened (``train.lr``).

    Raises:
        TrackingError: the store cannot be reached (raised before the stage computes).

    The run ends FINISHED on success, FAILED when the stage raises, KILLED when it
    is interrupted (SIGINT/SIGTERM), so no run is ever left RUNNING.
    """
    _prepare_env()
    uri = tracking_uri()
    try:
        import mlflow

        mlflow.set_tracking_uri(uri)
        with _init_lock(uri):
            _ensure_experiment(mlflow, uri)
    except Exception as err:  # noqa: BLE001 - any failure here means the store is unusable
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingError(f"MLflow tracking store {uri} is unreachable: {reason}") from None

    name = os.environ.get("DVC_STAGE") or stage
    tags = {"stage": name, "git_commit": git_commit()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    run = mlflow.start_run(run_name=name, tags=tags)
    log.info("MLflow run %s (%s) in %s", run.info.run_id, name, uri)
    status = "FINISHED"
    try:
        flat = {}
        for section, value in params.items():
            nested = hasattr(value, "model_dump")
            flat.update(flatten(value, section) if nested else {section: value})
        if flat:
            mlflow.log_params({k: str(v) for k, v in flat.items()})
        yield StageRun(mlflow, run.info.run_id)
    except (KeyboardInterrupt, SystemExit) as err:
        status = "KILLED" if not isinstance(err, SystemExit) or err.code else "FINISHED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        mlflow.end_run(status=status)
