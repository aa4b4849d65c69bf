"""`dvc exp run` and queued experiments in parallel: their MLflow runs land in the
project's own store (not DVC's temp copy), tagged with the experiment name.

Each test works on a committed copy of the session's tiny build (helpers.pipeline), so an
experiment reruns only what its change reaches (download is up to date)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, commit_all, run
from helpers.queue import wait_for_queue
from helpers.runs import parent_runs, stage_runs

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
    # one parent for the execution, named after the experiment, holding both stage runs
    (parent,) = parent_runs(repo)
    assert parent.info.run_name == "lr-up" and parent.info.status == "FINISHED"
    assert {r.data.tags.get("mlflow.parentRunId") for r in runs} == {parent.info.run_id}
    assert parent.data.params["train.lr"] == "0.004"


def test_exp_run_with_a_bad_key_is_one_line_and_runs_nothing(repo: Path) -> None:
    """A key params.yaml does not hold: DVC refuses `-S key=...` itself (Hydra's struct),
    naming the key, before any stage; with `-S ++key=...` (add it) validate_params is the
    one stage that runs, and its one line names the key."""
    before = (repo / "params.yaml").read_bytes()
    proc = run(
        ["dvc", "exp", "run", TARGET, "-n", "bad", "-S", "train.no_such_knob=1"],
        cwd=repo,
        check=False,
    )
    assert proc.returncode != 0
    assert "Running stage" not in proc.stdout
    dvc_errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
    assert len(dvc_errors) == 1 and "train.no_such_knob" in dvc_errors[0], proc.stderr
    assert (repo / "params.yaml").read_bytes() == before  # the workspace is untouched

    proc = run(
        ["dvc", "exp", "run", TARGET, "-n", "bad", "-S", "++train.no_such_knob=1"],
        cwd=repo,
        check=False,
    )
    assert proc.returncode != 0
    ran = [ln.split("'")[1] for ln in proc.stdout.splitlines() if ln.startswith("Running stage")]
    assert ran == ["validate_params"], proc.stdout[-2000:]
    # exactly one line of ours, the validator's, not DVC echoing the argument
    ours = [ln for ln in (proc.stdout + proc.stderr).splitlines() if " ERROR mnistlab" in ln]
    assert len(ours) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "params.yaml: train.no_such_knob: unknown key" in ours[0], ours
    # (DVC leaves a failed experiment's params in the workspace; nothing else changed)
    assert stage_runs(repo) == []


# Two experiments on two workers, at once: what the local store must survive. (Four on
# two workers, each worker taking a second task, run against the team's server in
# test_team.py's `queued` fixture.)
QUEUED = (("q-one", 1), ("q-two", 2))


def test_two_queued_experiments_at_once(repo: Path) -> None:
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
    status = wait_for_queue(repo, [n for n, _ in QUEUED], run, timeout=1200)
    run(["dvc", "queue", "stop"], cwd=repo, check=False)  # let idle workers go
    logs = "".join(
        run(["dvc", "queue", "logs", n], cwd=repo, check=False).stdout for n, _ in QUEUED
    )
    assert "Failed" not in status, status + logs[-4000:]
    assert status.count("Success") == len(QUEUED), status
    runs = _runs_by_exp(repo)
    # the cores the stages may use: affinity, capped by OMP_NUM_THREADS where the suite
    # set one (its share per pytest-xdist worker, see conftest)
    omp = os.environ.get("OMP_NUM_THREADS", "")
    cores = min(len(os.sched_getaffinity(0)), int(omp) if omp.isdigit() and int(omp) else 1 << 20)
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
        # `threads: auto` shared the cores between the two real queue workers
        assert {r.data.tags["torch_threads"] for r in got} == {str(max(1, cores // 2))}
    # one parent per queued experiment, named after it, holding exactly its stage runs
    parents = {p.info.run_name: p for p in parent_runs(repo)}
    assert sorted(parents) == sorted(n for n, _ in QUEUED)
    for name, _ in QUEUED:
        assert parents[name].info.status == "FINISHED"
        ids = {r.data.tags.get("mlflow.parentRunId") for r in runs[name]}
        assert ids == {parents[name].info.run_id}, (name, ids)
