"""What one real `dvc repro` of the tiny pipeline leaves in MLflow: one parent run with
every stage run as its child, data lineage (dataset inputs, logged models with their
evaluation metrics, registry aliases), and the MLflow UI showing it in headless Chromium.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import run
from helpers.pipeline import TinyBuild
from helpers.runs import parent_runs, stage_runs
from helpers.study import MODELS

if TYPE_CHECKING:  # imported at run time as the plugin below, never before (pytest's rewrite)
    from helpers.browser import Chromium, MlflowUI

# the session fixtures `chromium` and `mlflow_ui`, shared with test_pipeline
pytest_plugins = ["helpers.browser"]

pytestmark = pytest.mark.slow


@pytest.fixture
def built(tiny_build: TinyBuild) -> Path:
    """The session's tiny build, after one full `dvc repro` (read only)."""
    return tiny_build.repo


def _uri(repo: Path) -> str:
    return f"sqlite:///{repo}/mlflow.db"


def _runs(repo: Path) -> tuple[list, list]:
    return parent_runs(repo), stage_runs(repo)


def test_one_parent_holds_every_stage_run(built: Path, tiny_build: TinyBuild) -> None:
    import hashlib

    import yaml

    from mnistlab.core.config import flatten, load_params

    executed = tiny_build.ran
    (parent,), children = _runs(built)
    assert len(children) >= 30
    assert sorted(r.info.run_name for r in children) == sorted(executed - {"validate_params"})
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in (parent, *children))
    assert parent.info.end_time >= max(r.info.end_time for r in children)

    commit = run(["git", "rev-parse", "HEAD"], cwd=built).stdout.strip()
    digest = hashlib.sha256((built / "params.yaml").read_bytes()).hexdigest()[:8]
    assert parent.info.run_name == f"{commit[:7]}-params-{digest}"
    assert parent.data.tags["git_commit"] == commit
    params = flatten(load_params(built / "params.yaml"))
    assert parent.data.params == {k: str(v) for k, v in params.items()}
    assert yaml.safe_load(parent.data.params["attacks.pgd.eps"]) == [0.0, 0.1, 0.3]

    metrics = parent.data.metrics
    for m in MODELS:
        ev = json.loads((built / f"metrics/evaluate/{m}.json").read_text())
        assert metrics[f"test_accuracy.{m}"] == pytest.approx(ev["test_accuracy"])
        pgd = json.loads((built / f"metrics/attack/pgd-{m}.json").read_text())
        strong = json.loads((built / f"metrics/attack/strong-{m}.json").read_text())
        for eps in ("0.1", "0.3"):
            assert metrics[f"robust_accuracy.pgd.{m}.{eps}"] == pytest.approx(
                pgd["robust_accuracy"][eps]
            )
            assert metrics[f"robust_accuracy.strong.{m}.{eps}"] == pytest.approx(
                strong["robust_accuracy"]["strong"][eps]
            )
        # AutoAttack's standard budget, at eps 0.3 only
        assert metrics[f"robust_accuracy.standard.{m}.0.3"] == pytest.approx(
            strong["standard"]["robust_accuracy"]["0.3"]
        )
        tr = json.loads((built / f"metrics/train/{m}.json").read_text())
        assert metrics[f"train_minutes.{m}"] == pytest.approx(tr["train_seconds"] / 60, abs=0.01)
    assert len(metrics) == 7 * len(MODELS)

    for r in children:  # liveness and threads, on every stage run
        assert r.data.tags["host"] and int(r.data.tags["pid"]) > 0
        assert float(r.data.tags["startup_seconds"]) > 0
    train = next(r for r in children if r.info.run_name == "train@cnn")
    assert train.data.params["threads"] == "auto"
    assert int(train.data.tags["torch_threads"]) >= 1


def test_data_lineage_from_dataset_to_models(built: Path) -> None:
    import mlflow

    from mnistlab.harness.provenance import file_sha256, mnist_dataset

    mlflow.set_tracking_uri(_uri(built))
    client = mlflow.MlflowClient()
    _, children = _runs(built)
    by_name = {r.info.run_name: r for r in children}
    dataset = mnist_dataset(built / "data/MNIST/raw", cwd=built)
    for stage, context in (("train@cnn", "training"), ("evaluate@cnn_bn", "evaluation")):
        (inp,) = by_name[stage].inputs.dataset_inputs
        tags = {t.key: t.value for t in inp.tags}
        assert (inp.dataset.name, inp.dataset.digest) == ("mnist", dataset.digest)
        assert str(built / "data/MNIST/raw") in inp.dataset.source
        assert tags["mlflow.data.context"] == context
        assert tags["md5.train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"

    exp = client.get_experiment_by_name("mnistlab")
    best_first = mlflow.search_logged_models(
        experiment_ids=[exp.experiment_id],
        order_by=[{"field_name": "metrics.test_accuracy", "ascending": False}],
        output_format="list",
    )
    assert len(best_first) == len(MODELS)
    accuracy = {}
    for model in best_first:
        (metric,) = [x for x in model.metrics if x.key == "test_accuracy"]
        assert (metric.dataset_name, metric.dataset_digest) == ("mnist", dataset.digest)
        name = by_name_of_run(by_name, model.source_run_id)  # train@<m>
        m = name.removeprefix("train@")
        ev = json.loads((built / f"metrics/evaluate/{m}.json").read_text())
        assert metric.value == pytest.approx(ev["test_accuracy"])
        assert model.tags["checkpoint_sha256"] == file_sha256(built / f"models/{m}.pt")
        assert by_name[f"evaluate@{m}"].data.tags["model_id"] == model.model_id
        accuracy[m] = metric.value
    assert [a for a in accuracy.values()] == sorted(accuracy.values(), reverse=True)

    for m in MODELS:  # the registry: @workspace is the version this repro trained
        version = client.get_model_version_by_alias(f"mnist-{m}", "workspace")
        assert version.run_id == by_name[f"train@{m}"].info.run_id
        assert version.tags["dataset.digest"] == dataset.digest
        assert version.tags["checkpoint_sha256"] == file_sha256(built / f"models/{m}.pt")


def by_name_of_run(by_name: dict, run_id: str) -> str:
    return next(name for name, r in by_name.items() if r.info.run_id == run_id)


@pytest.mark.xdist_group("browser")  # the worker that holds the session's Chromium and UI
def test_mlflow_ui_shows_the_parent_and_its_stage_runs(
    mlflow_ui: MlflowUI, chromium: Chromium, tmp_path: Path
) -> None:
    """`mlflow ui` as `make ui` serves it; the runs URL `make ui` prints lists the parent,
    and expanding it shows the stage runs (a React app: a real browser is needed)."""
    from ops.ui import ui_url

    (parent,), _ = _runs(mlflow_ui.repo)
    with chromium.page(viewport={"width": 1400, "height": 900}) as page:
        page.goto(ui_url(mlflow_ui.url, mlflow_ui.uri))
        name = page.get_by_text(parent.info.run_name, exact=True)
        name.wait_for(timeout=90_000)
        assert "/runs" in page.url  # the runs table, not the GenAI overview
        row = page.locator('[role="row"]', has=name)
        row.locator('button[data-component-id$="runnamecellrenderer.tsx_46"]').click()
        page.get_by_text("train@cnn_bn", exact=True).wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "runs.png"))
    assert (tmp_path / "runs.png").stat().st_size > 10_000
