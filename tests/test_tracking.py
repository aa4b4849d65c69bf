"""MLflow URI resolution and the one-run-per-stage contract, against a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.params import params_with
from mnistlab.core import tracking
from mnistlab.core.errors import TrackingError


def test_uri_prefers_env_var(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "DVC_ROOT": str(tmp_path)}
    assert tracking.tracking_uri(env) == "http://127.0.0.1:5000"


def test_uri_uses_dvc_root(tmp_path: Path) -> None:
    uri = tracking.tracking_uri({"DVC_ROOT": str(tmp_path)}, cwd="/")
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_uri_without_dvc_root_finds_project_root(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert tracking.tracking_uri({}, cwd=nested) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_numeric_items_flattens_and_filters() -> None:
    flat = tracking.numeric_items(
        {
            "acc": 0.9,
            "per_class": [0.5, 1],
            "nested": {"x": 2},
            "name": "cnn",
            "ok": True,
            "bad": float("nan"),
        }
    )
    assert flat == {"acc": 0.9, "per_class.0": 0.5, "per_class.1": 1.0, "nested.x": 2.0}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_STAGE", "train@cnn")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-one")
    monkeypatch.chdir(tmp_path)
    return uri


def _runs(uri: str):
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    return client.search_runs([exp.experiment_id])


def test_stage_run_logs_params_metrics_tags(store: str) -> None:
    params = params_with({"train": {"epochs": 2}})
    with tracking.stage_run("train", {"seed": params.seed, "train": params.train}) as run:
        run.log_metrics({"val": {"accuracy": 0.5}, "per_class": [1, 0]})
        run.log_series("train_loss", [0, 10, 20], [2.0, 1.0, 0.5])
    (r,) = _runs(store)
    assert r.info.run_name == "train@cnn"
    assert r.info.status == "FINISHED"
    assert r.data.tags["stage"] == "train@cnn"
    assert r.data.tags["dvc_exp_name"] == "exp-one"
    assert "git_commit" in r.data.tags
    assert r.data.params["train.epochs"] == "2"
    assert r.data.params["seed"] == "42"
    assert r.data.metrics["val.accuracy"] == 0.5
    import mlflow

    history = mlflow.MlflowClient(store).get_metric_history(r.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 2.0), (10, 1.0), (20, 0.5)]


def test_stage_run_marks_failures(store: str) -> None:
    with pytest.raises(RuntimeError):
        with tracking.stage_run("x", {}):
            raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt):
        with tracking.stage_run("x", {}):
            raise KeyboardInterrupt
    statuses = sorted(r.info.status for r in _runs(store))
    assert statuses == ["FAILED", "KILLED"]


def test_unreachable_store_fails_fast_naming_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9 is unreachable"):
        with tracking.stage_run("x", {}):
            pytest.fail("the stage body must not run")
