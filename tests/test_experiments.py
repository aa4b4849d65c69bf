"""`dvc exp run` and queued experiments in parallel: their MLflow runs land in the
project's own store (not DVC's temp copy), tagged with the experiment name.

Each test works on a committed copy of the session's tiny build (helpers.pipeline), so an
experiment reruns only what its change reaches (download is up to date)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, commit_all, run
from helpers.runs import stage_runs

pytestmark = pytest.mark.slow

TARGET = "evaluate@cnn"  # validate_params -> train@cnn -> evaluate@cnn: enough for tracking


@pytest.fixture
def repo(pipeline_copy: Path) -> Path:
    """A copy of the tiny build with its results committed, and no MLflow store yet."""
    commit_all(pipeline_copy, "built")
    return pipeline_copy


def _runs_by_exp(repo: Path) -> dict[str, list]:
    """Stage runs by experiment name (the parent of each execution is not counted)."""
    out: dict[str, list] = {}
    for r in stage_runs(repo):
        out.setdefault(r.data.tags.get("dvc_exp_name", ""), []).append(r)
    return out


def test_exp_run_set_param(repo: Path) -> None:
    run(["dvc", "exp", "run", TARGET, "-n", "lr-up", "-S", "train.lr=0.004"], cwd=repo)
    runs = _runs_by_exp(repo)["lr-up"]
    names = sorted(r.info.run_name for r in runs)
    assert names == ["evaluate@cnn", "train@cnn"]  # validate_params logs no run
    (train,) = [r for r in runs if r.info.run_name == "train@cnn"]
    assert train.data.params["train.lr"] == "0.004"
    show = run(["dvc", "exp", "show", "--csv"], cwd=repo).stdout
    assert "lr-up" in show and "test_accuracy" in show
    assert not (repo / ".dvc" / "tmp" / "exps" / "mlflow.db").exists()


QUEUED = (("q-one", 1), ("q-two", 2), ("q-three", 3), ("q-four", 4))


def test_four_queued_experiments_two_at_a_time(repo: Path) -> None:
    for name, seed in QUEUED:
        run(["dvc", "exp", "run", TARGET, "--queue", "-n", name, "-S", f"seed={seed}"], cwd=repo)
    # The workers inherit `dvc queue start`'s stdout: do not capture it, or we wait on them.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run(
        ["dvc", "queue", "start", "-j", "2"],
        cwd=repo,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
    )
    deadline = time.time() + 1200
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], cwd=repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(1)
    run(["dvc", "queue", "stop"], cwd=repo, check=False)  # let idle workers go
    logs = "".join(
        run(["dvc", "queue", "logs", n], cwd=repo, check=False).stdout for n, _ in QUEUED
    )
    assert "Failed" not in status, status + logs[-4000:]
    assert status.count("Success") == len(QUEUED), status
    runs = _runs_by_exp(repo)
    for name, seed in QUEUED:
        got = runs.get(name, [])
        names = {r.info.run_name for r in got}
        # `download` is up to date in the build, so no experiment runs it
        assert names == {"evaluate@cnn", "train@cnn"}
        assert len(got) == len(names)
        assert all(r.info.status == "FINISHED" for r in got)
        assert {r.data.params.get("seed") for r in got if "seed" in r.data.params} == {str(seed)}
        # artifacts went to the real repo, not the deleted temp workspace
        (train,) = [r for r in got if r.info.run_name == "train@cnn"]
        assert train.info.artifact_uri.startswith((repo / "mlruns").resolve().as_uri())
