"""MLflow tracking for stages: one run per executed stage, under one parent run per
pipeline execution, in the project's own store.

This module and :mod:`mnistlab.harness.tracking_store` are the only library modules that
touch MLflow; stage modules use :func:`stage_run` and the :class:`StageRun` it yields
(``run.log_outputs`` after ``core.outputs.write_outputs``). MLflow is imported lazily so
stages that fail early (bad params) pay nothing for it. ``MNISTLAB_TRACKING=0`` runs a
stage without MLflow: it writes the same bytes (the harness records, it never decides).

**One parent per execution.** Every stage run that DVC starts is a child (tag
``mlflow.parentRunId``) of one parent run per pipeline execution: one ``dvc repro``,
one ``dvc exp run``, one queued experiment. The parent is named after the experiment
(``DVC_EXP_NAME``) or, for a plain ``dvc repro``, ``<commit>-params-<digest>`` (the
short commit and a digest of ``params.yaml``). Stages of one execution find it by its
*execution key*: host, boot id, pid and start time of the nearest ``dvc`` process
above the stage (:func:`mnistlab.harness.procs.dvc_ancestor`: ``dvc repro``, ``dvc exp
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
import logging
import math
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistlab.core.config import flatten
from mnistlab.core.errors import TrackingError
from mnistlab.harness.provenance import (
    DatasetInfo,
    file_sha256,
    find_execution,
    find_root,
    mnist_dataset,
)
from mnistlab.harness.runtime import mark_outputs_written
from mnistlab.harness.tracking_store import (
    _first_line,
    _prepare_env,
    _run_tags,
    _Store,
    tracking_uri,
)

if TYPE_CHECKING:
    from mnistlab.core.outputs import StageOutputs

log = logging.getLogger(__name__)

TRACKING_SWITCH = "MNISTLAB_TRACKING"  # "0": stages record nothing in MLflow
WORKSPACE_ALIAS = "workspace"  # the registry alias of models the workspace pipeline trains
CHECKPOINT_TAG = "checkpoint_sha256"  # on logged models: which checkpoint file they are


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


# Robust accuracy is summarised on the parent run at these eps (when the grid has them).
HEADLINE_EPS = ("0.1", "0.3")
HEADLINE_FORMS = ("pgd", "strong")


def headline_metrics(stage: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """The few numbers of a stage worth seeing on its pipeline's parent run.

    ``evaluate@<m>`` gives ``test_accuracy.<m>``; ``train@<m>`` gives
    ``train_minutes.<m>``; ``attack@pgd-<m>`` and ``attack@strong-<m>`` give
    ``robust_accuracy.<form>.<m>.<eps>`` at eps 0.1 and 0.3, and the strong form also
    ``robust_accuracy.standard.<m>.<eps>`` where it ran AutoAttack's standard budget;
    other stages give nothing.
    """
    kind, _, item = stage.partition("@")
    if kind == "evaluate" and isinstance(metrics.get("test_accuracy"), (int, float)):
        return {f"test_accuracy.{item}": float(metrics["test_accuracy"])}
    if kind == "train" and isinstance(metrics.get("train_seconds"), (int, float)):
        return {f"train_minutes.{item}": round(float(metrics["train_seconds"]) / 60, 2)}
    form, _, model = item.partition("-")
    if kind != "attack" or form not in HEADLINE_FORMS:
        return {}
    curves = {form: metrics.get("robust_accuracy", {})}
    if form == "strong":
        # the worst case over the ensemble, and over AutoAttack's standard budget
        curves = {
            "strong": curves["strong"].get("strong", {}),
            "standard": metrics.get("standard", {}).get("robust_accuracy", {}),
        }
    return {
        f"robust_accuracy.{name}.{model}.{eps}": float(curve[eps])
        for name, curve in curves.items()
        for eps in HEADLINE_EPS
        if isinstance(curve.get(eps), (int, float))
    }


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

    def log_outputs(self, out: StageOutputs, *, figures: str | Path | None = None) -> None:
        """Log what ``core.outputs.write_outputs`` just wrote: the metrics (and the headline
        ones to the parent run), the step series and the figure directory."""
        mark_outputs_written()  # from here on a failure must say the outputs were replaced
        self.log_metrics(out.metrics)
        self.log_summary(headline_metrics(self.stage, out.metrics))
        for name, (steps, values) in out.series.items():
            self.log_series(name, steps, values)
        if figures is not None:
            self.log_artifacts([figures], "figures")

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


class UntrackedRun:
    """What :func:`stage_run` yields with ``MNISTLAB_TRACKING=0``: a :class:`StageRun`
    whose calls record nothing, so a stage runs the same code with or without MLflow."""

    run_id = parent_id = model_id = None

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def log_outputs(self, out: StageOutputs, *, figures: str | Path | None = None) -> None:
        mark_outputs_written()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not callable(getattr(StageRun, name, None)):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def tracking_enabled() -> bool:
    """False when ``MNISTLAB_TRACKING=0``: stages then run without opening MLflow at all."""
    return os.environ.get(TRACKING_SWITCH, "1") != "0"


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
    name = os.environ.get("DVC_STAGE") or stage
    if not tracking_enabled():
        log.info("%s: not tracked (%s=0)", name, TRACKING_SWITCH)
        yield UntrackedRun(name)
        return
    _prepare_env()
    uri = tracking_uri()
    try:
        store = _Store(uri)
    except Exception as err:  # noqa: BLE001 - any failure here means the store is unusable
        reason = _first_line(err)
        raise TrackingError(f"MLflow tracking store {uri} is unreachable: {reason}") from None
    store.check_writable()

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
