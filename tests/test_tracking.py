"""MLflow URI resolution, one run per stage under one parent per pipeline execution, and
liveness of runs, against a real SQLite store."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.params import params_with
from mnistlab.core.errors import TrackingError
from mnistlab.harness import procs, tracking, tracking_store


def test_uri_prefers_env_var(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "DVC_ROOT": str(tmp_path)}
    assert tracking_store.tracking_uri(env) == "http://127.0.0.1:5000"


def test_uri_uses_dvc_root(tmp_path: Path) -> None:
    uri = tracking_store.tracking_uri({"DVC_ROOT": str(tmp_path)}, cwd="/")
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_uri_without_dvc_root_finds_project_root(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert (
        tracking_store.tracking_uri({}, cwd=nested) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    )


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
    exp = client.get_experiment_by_name(tracking_store.EXPERIMENT)
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


# --------------------------------------------------------------------------- parent runs

FAKE_DVC = procs.ProcInfo(pid=999_999, ppid=1, start=12345, argv=("dvc", "repro"))


@pytest.fixture
def under_dvc(store: str, monkeypatch: pytest.MonkeyPatch) -> procs.ProcInfo:
    """Stages in this process behave as if one `dvc` process (FAKE_DVC) ran them."""
    shutil.copy(Path(__file__).parents[1] / "params.yaml", "params.yaml")  # cwd: the store's
    monkeypatch.setattr(procs, "dvc_ancestor", lambda pid=None: FAKE_DVC)
    return FAKE_DVC


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(uri)


def _by_kind(uri: str) -> tuple[list, list]:
    runs = _runs(uri)
    parents = [r for r in runs if r.data.tags.get("run_kind") == "pipeline"]
    return parents, [r for r in runs if r.data.tags.get("run_kind") == "stage"]


def test_stages_of_one_execution_share_one_parent(
    store: str, under_dvc: procs.ProcInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    for stage in ("download", "train@cnn", "evaluate@cnn"):
        monkeypatch.setenv("DVC_STAGE", stage)
        with tracking.stage_run(stage, {}) as run:
            run.log_summary({f"seen.{stage.replace('@', '.')}": 1.0})
    (parent,), children = _by_kind(store)
    assert parent.info.run_name == "exp-one"  # DVC_EXP_NAME names it
    assert sorted(r.info.run_name for r in children) == ["download", "evaluate@cnn", "train@cnn"]
    assert {r.data.tags[tracking_store.PARENT_TAG] for r in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert parent.info.end_time >= max(r.info.end_time for r in children)
    # the full params.yaml, flattened, and the execution's facts
    assert parent.data.params["train.epochs"] == "5"
    assert parent.data.params["threads"] == "auto"
    assert parent.data.params["attacks.pgd.steps"] == "40"
    assert parent.data.tags["dvc_exp_name"] == "exp-one"
    assert parent.data.tags["pid"] == str(FAKE_DVC.pid)
    assert parent.data.tags["git_commit"]
    assert set(parent.data.metrics) == {"seen.download", "seen.train.cnn", "seen.evaluate.cnn"}
    exp = _client(store).get_experiment_by_name(tracking_store.EXPERIMENT)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_failed_stage_fails_the_parent_for_good(
    store: str, under_dvc: procs.ProcInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tracking.stage_run("a", {}):
        pass
    (parent,), _ = _by_kind(store)
    assert parent.info.status == "FINISHED"
    with pytest.raises(RuntimeError):
        with tracking.stage_run("b", {}):
            raise RuntimeError("boom")
    with tracking.stage_run("c", {}):  # `dvc repro -k` goes on with other stages
        pass
    (parent,), children = _by_kind(store)
    assert parent.info.status == "FAILED" and len(children) == 3


def test_another_dvc_process_gets_another_parent(
    store: str, under_dvc: procs.ProcInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tracking.stage_run("a", {}):
        pass
    other = dataclasses.replace(FAKE_DVC, pid=FAKE_DVC.pid + 1)
    monkeypatch.setattr(procs, "dvc_ancestor", lambda pid=None: other)
    monkeypatch.delenv("DVC_EXP_NAME")
    with tracking.stage_run("a", {}):
        pass
    parents, _ = _by_kind(store)
    assert len(parents) == 2
    # a plain `dvc repro` is named after the commit and params.yaml
    assert any(re.fullmatch(r"\w+-params-[0-9a-f]{8}", p.info.run_name) for p in parents)


def test_parent_race_keeps_the_oldest(
    store: str, under_dvc: procs.ProcInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the lock (a store shared across hosts), a second creator defers to the first."""
    import mlflow

    client = _client(store)
    with tracking.stage_run("first", {}) as run:
        rival = run.parent_id
    monkeypatch.setattr(tracking_store, "_store_lock", lambda uri: contextlib.nullcontext())
    real = tracking_store._Store._parents
    calls = []

    def late(self, key):  # the rival's parent is not visible yet at the first look
        calls.append(key)
        return [] if len(calls) == 1 else real(self, key)

    monkeypatch.setattr(tracking_store._Store, "_parents", late)
    with tracking.stage_run("second", {}) as run:
        assert run.parent_id == rival
    active = [r for r in _runs(store) if r.data.tags.get("run_kind") == "pipeline"]
    assert [r.info.run_id for r in active] == [rival]
    deleted = client.search_runs(
        [active[0].info.experiment_id], run_view_type=mlflow.entities.ViewType.DELETED_ONLY
    )
    assert len(deleted) == 1 and deleted[0].data.tags["run_kind"] == "pipeline"


PARENT_RACE = """
import os, sys
from mnistlab.harness import procs, tracking, tracking_store
fake = procs.ProcInfo(pid=4242, ppid=1, start=7, argv=("dvc", "repro"))
procs.dvc_ancestor = lambda pid=None: fake
os.environ["DVC_STAGE"] = sys.argv[1]
look_up = tracking_store._Store.parent_for

def at_the_gate(self, ex, root):  # store open, parent not looked for: wait for the rest
    print("ready", flush=True)
    sys.stdin.read(1)  # released together
    return look_up(self, ex, root)

tracking_store._Store.parent_for = at_the_gate
with tracking.stage_run(sys.argv[1], {}) as run:
    print(run.parent_id, flush=True)
"""


def _line(proc: subprocess.Popen, timeout: float = 120) -> str:
    """The next line ``proc`` prints, failing (not hanging) if none comes."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line from {proc.args[-1]} in {timeout}s"
    return proc.stdout.readline().strip()


@pytest.mark.slow  # starts real stage processes (15-30 s on 2 cores)
def test_parallel_stages_create_one_parent(store: str, tmp_path: Path) -> None:
    """Three stages of one execution, held at a gate until each has its store open and
    none has looked for the parent, then released together: one parent, none discarded."""
    import mlflow

    racers = [
        subprocess.Popen(
            [sys.executable, "-c", PARENT_RACE, f"stage{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    try:
        assert [_line(p) for p in racers] == ["ready"] * 3
        assert _by_kind(store) == ([], [])  # all three at the gate, no parent yet
        for p in racers:
            p.stdin.write("x")
            p.stdin.flush()
        parents = {p.communicate(timeout=120)[0].strip() for p in racers}
    finally:
        for p in racers:
            p.kill()
    assert [p.returncode for p in racers] == [0, 0, 0]
    assert len(parents) == 1
    (parent,), children = _by_kind(store)
    assert parents == {parent.info.run_id} and len(children) == 3
    # the lock made the others wait and find it: nobody created a parent and gave it up
    deleted = _client(store).search_runs(
        [parent.info.experiment_id], run_view_type=mlflow.entities.ViewType.DELETED_ONLY
    )
    assert deleted == []


def test_headline_metrics() -> None:
    from mnistlab.harness.tracking import headline_metrics

    assert headline_metrics("evaluate@cnn", {"test_accuracy": 0.99, "n": 3}) == {
        "test_accuracy.cnn": 0.99
    }
    pgd = {"robust_accuracy": {"0": 0.99, "0.1": 0.7, "0.2": 0.4, "0.3": 0.0}}
    assert headline_metrics("attack@pgd-cnn_bn", pgd) == {
        "robust_accuracy.pgd.cnn_bn.0.1": 0.7,
        "robust_accuracy.pgd.cnn_bn.0.3": 0.0,
    }
    strong = {"robust_accuracy": {"pgd": {"0.1": 0.9}, "strong": {"0.1": 0.8, "0.2": 0.5}}}
    assert headline_metrics("attack@strong-cnn_adv", strong) == {
        "robust_accuracy.strong.cnn_adv.0.1": 0.8
    }
    strong["standard"] = {"robust_accuracy": {"0.3": 0.4}, "gap": {"0.3": 0.1}}
    assert headline_metrics("attack@strong-cnn_adv", strong) == {
        "robust_accuracy.strong.cnn_adv.0.1": 0.8,
        "robust_accuracy.standard.cnn_adv.0.3": 0.4,
    }
    assert headline_metrics("attack@fgsm-cnn", pgd) == {}
    assert headline_metrics("train@cnn", {"val_accuracy": 0.9}) == {}
    assert headline_metrics("train@cnn", {"train_seconds": 333.0}) == {"train_minutes.cnn": 5.55}


# --------------------------------------------------------------------------- executions

FAKE_DVC_SCRIPT = """#!{python}
# Stands in for `dvc`: runs its arguments as a child, like DVC runs a stage's command.
import subprocess, sys
sys.exit(subprocess.call(sys.argv[1:]))
"""

SHOW_EXECUTION = """
import subprocess, sys
from mnistlab.harness import provenance
ex = provenance.find_execution()
print(ex.key if ex else None, ex.name if ex else None, flush=True)
if len(sys.argv) > 1:  # and once more from a grandchild (a stage's own subprocess)
    subprocess.run([sys.executable, "-c", sys.argv[1]], check=True)
"""


def fake_dvc(tmp_path: Path) -> Path:
    """An executable named `dvc` whose kernel command line looks like the real one's."""
    path = tmp_path / "bin" / "dvc"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE_DVC_SCRIPT.format(python=sys.executable))
    path.chmod(0o755)
    return path


def test_execution_is_the_nearest_dvc_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    dvc = fake_dvc(tmp_path)
    cmd = [
        str(dvc),
        sys.executable,
        "-c",
        SHOW_EXECUTION,
        SHOW_EXECUTION.replace("argv) > 1", "argv) > 9"),
    ]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=True)
    lines = first.stdout.split("\n")
    assert lines[0] == lines[1] and lines[0].split()[0] != "None"  # same dvc, same key
    digest = hashlib.sha256(b"seed: 1\n").hexdigest()[:8]
    assert lines[0].split()[1] == f"unknown-params-{digest}"  # not a git repo: no commit
    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert second.stdout.split("\n")[0].split()[0] != lines[0].split()[0]  # another dvc
    alone = subprocess.run(
        [sys.executable, "-c", SHOW_EXECUTION], capture_output=True, text=True, check=True
    )
    assert alone.stdout.split() == ["None", "None"]  # by hand: no execution, no parent


def test_dvc_args_recognises_how_dvc_runs() -> None:
    assert procs.dvc_args(("dvc", "repro")) == ("repro",)
    assert procs.dvc_args(("/v/bin/python3.11", "/v/bin/dvc", "exp", "run")) == ("exp", "run")
    assert procs.dvc_args(("python", "-m", "dvc", "repro")) == ("repro",)
    assert procs.dvc_args(("/bin/sh", "-c", "python -m stages.train")) is None
    assert procs.dvc_args(()) is None


# --------------------------------------------------------------------------- liveness

HOLD_RUN = """
import os, sys, time
from mnistlab.harness import tracking
with tracking.stage_run("train@cnn", {}) as run:
    print(os.getpid(), run.run_id, run.parent_id, flush=True)
    time.sleep(120)
"""


@pytest.mark.slow  # starts real stage processes (15-30 s on 2 cores)
def test_run_of_a_killed_stage_is_marked_killed_by_the_next(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dvc = fake_dvc(tmp_path)
    proc = subprocess.Popen(
        [str(dvc), sys.executable, "-c", HOLD_RUN], stdout=subprocess.PIPE, text=True
    )
    pid, run_id, parent_id = proc.stdout.readline().split()
    client = _client(store)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.tags["pid"] == pid and run.data.tags["host"] == socket.gethostname()
    assert int(run.data.tags["pid_start"]) > 0
    os.kill(int(pid), signal.SIGKILL)  # no handler runs: the run stays RUNNING
    proc.wait(timeout=30)
    assert client.get_run(run_id).info.status == "RUNNING"

    with tracking.stage_run("train@cnn", {}):  # the next run of that stage, on this host
        assert client.get_run(run_id).info.status == "KILLED"
    assert client.get_run(parent_id).info.status == "KILLED"
    assert client.get_run(run_id).info.end_time is not None


def test_a_live_run_of_the_same_stage_is_left_alone(store: str) -> None:
    client = _client(store)
    with tracking.stage_run("train@cnn", {}):
        exp = client.get_experiment_by_name(tracking_store.EXPERIMENT)
        # a run whose pid is alive (pytest's parent, as another stage's would be)
        with_live = client.create_run(
            exp.experiment_id,
            run_name="train@cnn",
            tags={"host": socket.gethostname(), "pid": str(os.getppid())},
        )
    with tracking.stage_run("train@cnn", {}):
        pass
    assert client.get_run(with_live.info.run_id).info.status == "RUNNING"


def test_unwritable_artifact_dir_fails_before_the_stage_computes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    (tmp_path / "mlruns").write_text("a file where the artifact directory should be\n")
    uri = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    with pytest.raises(TrackingError) as info:
        with tracking.stage_run("x", {}):
            pytest.fail("the stage body must not run")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"MLflow tracking store {uri} is not writable: artifact directory")


def test_a_stepped_wall_clock_does_not_make_a_live_process_gone(monkeypatch) -> None:
    """A VM resumed from a snapshot steps the wall clock, and psutil's create_time (boot
    time = now - uptime, + ticks) moves with it. Identity must not: a stage that took its
    own `dvc` for a vanished process stopped itself mid-run (seen in this project's CI)."""
    import time

    import psutil

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        info = procs.proc_info(child.pid)
        deadline = time.monotonic() + 60
        while (info is None or not info.argv) and time.monotonic() < deadline:
            time.sleep(0.05)  # until it has exec'd: a fork not yet exec'd has no argv
            info = procs.proc_info(child.pid)
        assert info is not None and info.argv and procs.is_alive(child.pid, info.start)
        real = psutil.Process.create_time
        monkeypatch.setattr(psutil.Process, "create_time", lambda self: real(self) + 3600.0)
        monkeypatch.setattr(time, "time", lambda: 1e10)  # the clock jumped far ahead
        assert procs.proc_info(child.pid) == info  # the same identity after the step
        assert procs.is_alive(child.pid, info.start)
        assert 0 <= procs.age_seconds(info) < 30
        assert procs.boot_id() and procs.boot_id() == procs.boot_id()
    finally:
        child.kill()
        child.wait()
    assert not procs.is_alive(child.pid, info.start)
