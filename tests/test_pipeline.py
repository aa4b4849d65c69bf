"""The whole pipeline under real `dvc repro`, on the tiny params profile, in a scratch repo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_scratch_repo, run, write_params

pytestmark = pytest.mark.slow


def ran(output: str) -> set[str]:
    """Stage names that `dvc repro` executed, from its output."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def mlflow_runs(repo: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo}/mlflow.db")
    exp = client.get_experiment_by_name("mnistlab")
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, mnist_raw: Path) -> Path:
    """A scratch repo after one full `dvc repro` on the tiny profile (shared by the tests)."""
    repo = make_scratch_repo(tmp_path_factory.mktemp("pipeline"), mnist_raw)
    out = run(["dvc", "repro"], cwd=repo)
    (repo / "first_repro.log").write_text(out.stdout)
    return repo


def test_full_repro_runs_every_stage_once(built: Path) -> None:
    stages = set(run(["dvc", "stage", "list", "--name-only"], cwd=built).stdout.split())
    assert ran((built / "first_repro.log").read_text()) == stages
    runs = mlflow_runs(built)
    names = sorted(r.info.run_name for r in runs)
    # one MLflow run per executed stage (validate_params logs none: it only checks)
    assert names == sorted(stages - {"validate_params"})
    assert all(r.info.status == "FINISHED" for r in runs)


def test_outputs_and_metrics(built: Path) -> None:
    for model in ("cnn", "cnn_bn"):
        train = json.loads((built / f"metrics/train/{model}.json").read_text())
        assert train["n_train"] == 2000 and len(train["seconds_per_epoch"]) == 1
        ev = json.loads((built / f"metrics/evaluate/{model}.json").read_text())
        assert ev["n_test"] == 1000
        assert 0.5 < ev["test_accuracy"] <= 1.0  # 2000 images, 1 epoch: well above chance
        assert len(ev["per_class_accuracy"]) == 10 and len(ev["samples"]) == 6
        for png in ("loss_curves", "val_accuracy"):
            assert (built / f"plots/train/{model}/{png}.png").stat().st_size > 5000
        for png in ("confusion", "samples", "misclassified"):
            assert (built / f"plots/evaluate/{model}/{png}.png").stat().st_size > 5000
        arch = json.loads((built / f"metrics/architecture/{model}.json").read_text())
        assert arch["total_neurons"] == 574
        assert (built / f"models/{model}.pt").is_file()
        confusion = (built / f"plots/evaluate/{model}.csv").read_text().splitlines()
        assert confusion[0] == "actual,predicted" and len(confusion) == 1001


def test_registered_models_classify_like_evaluate(built: Path) -> None:
    import mlflow
    import numpy as np

    from mnistlab import data

    images, labels = data.load_mnist(built / "data/MNIST/raw", "test")
    x = images[:1000].unsqueeze(1).float().numpy() / 255.0
    for model in ("cnn", "cnn_bn"):
        mlflow.set_tracking_uri(f"sqlite:///{built}/mlflow.db")
        pyfunc = mlflow.pyfunc.load_model(f"models:/mnist-{model}/latest")
        preds = np.asarray(pyfunc.predict(x.astype(np.float32))).argmax(1)
        acc = float((preds == labels[:1000].numpy()).mean())
        ev = json.loads((built / f"metrics/evaluate/{model}.json").read_text())
        assert acc == pytest.approx(ev["test_accuracy"], abs=1e-9)


def test_second_repro_runs_nothing(built: Path) -> None:
    n_runs = len(mlflow_runs(built))
    out = run(["dvc", "repro"], cwd=built)
    assert ran(out.stdout) == set()
    assert len(mlflow_runs(built)) == n_runs


def test_model_override_reruns_only_that_model(built: Path) -> None:
    before = (built / "metrics/evaluate/cnn.json").read_text()
    write_params(built, {"models": {"cnn_bn": {"lr": 0.003}}})
    status = run(["dvc", "status"], cwd=built).stdout
    assert "train@cnn_bn" in status and "train@cnn:" not in status
    diff = run(["dvc", "params", "diff"], cwd=built).stdout
    assert "models.cnn_bn.lr" in diff
    out = run(["dvc", "repro"], cwd=built)
    executed = ran(out.stdout)
    assert {"train@cnn_bn", "evaluate@cnn_bn"} <= executed
    assert all("cnn_bn" in s or s == "validate_params" for s in executed), executed
    assert (built / "metrics/evaluate/cnn.json").read_text() == before
