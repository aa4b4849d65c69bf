"""Warm stages (mnistlab.harness.warm): under a DVC process, every stage after the first runs
in a worker forked from one server that has torch and MLflow imported.

A stand-in ``dvc`` (a script of that name, which is how the launcher recognises the
DVC process above it) runs stage commands one after another, so these tests see the
launcher, the server and the workers without a whole pipeline. The real ``dvc repro``
runs warm in every pipeline test; ``test_determinism`` checks that warm and cold runs
write the same bytes, and ``test_reliability`` that killing ``dvc`` leaves no worker.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, run, write_params
from helpers.runs import stage_runs, warm_servers
from mnistlab.harness.tracking import TRACKING_SWITCH
from mnistlab.harness.warm import SWITCH, _runs_warm

FAKE_DVC = f"""#!{sys.executable}
import json, subprocess, sys
for cmd in json.loads(sys.argv[1]):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(json.dumps([proc.returncode, proc.stderr]), flush=True)
"""


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A short private XDG_RUNTIME_DIR (unix socket paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mlw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with the project's params.yaml, its stages and a stand-in `dvc`."""
    root = tmp_path / "proj"
    shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "bin").mkdir()
    (root / "bin" / "dvc").write_text(FAKE_DVC)
    (root / "bin" / "dvc").chmod(0o755)
    return root


def _env(project: Path, runtime_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env.update(
        XDG_RUNTIME_DIR=str(runtime_dir),
        MLFLOW_TRACKING_URI=f"sqlite:///{project}/mlflow.db",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        **extra,
    )
    return env


def _architecture(out: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "stages",
        "architecture",
        "--model",
        "cnn",
        "--metrics",
        f"{out}.json",
        "--table",
        f"{out}.md",
    ]


def _servers_gone(runtime_dir: Path, timeout: float = 10) -> bool:
    """Whether every warm server of this test (its socket under ``runtime_dir``, which no
    other test or suite shares) has left within ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not warm_servers(runtime_dir=runtime_dir):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow  # starts real stage processes (15-30 s on 2 cores)
def test_stages_after_the_first_run_warm_and_write_the_same(
    project: Path, runtime_dir: Path
) -> None:
    cmds = [_architecture(f"out{i}") for i in range(3)]
    proc = run(
        [str(project / "bin" / "dvc"), json.dumps(cmds)],
        cwd=project,
        env=_env(project, runtime_dir),
    )
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [rc for rc, _ in results] == [0, 0, 0], results
    runs = stage_runs(project, "architecture@cnn")
    assert [r.data.tags["warm"] for r in runs] == ["true", "true", "true"]
    # the first started the server and waited while it imported torch and MLflow
    first, *later = (float(r.data.tags["startup_seconds"]) for r in runs)
    assert max(later) < first, (first, later)
    # the worker is the stage: its own pid on the run, the launcher's age as start-up
    assert len({r.data.tags["pid"] for r in runs}) == 3
    outputs = {(project / f"out{i}.json").read_bytes() for i in range(3)}
    assert len(outputs) == 1 and json.loads(outputs.pop())["total_params"] == 799_078
    # the server leaves with its DVC process, and its socket and lock with it
    assert _servers_gone(runtime_dir)
    assert list((runtime_dir / f"mnistlab-warm-{os.getuid()}").iterdir()) == []


@pytest.mark.slow  # starts real stage processes (15-30 s on 2 cores)
def test_a_warm_stage_fails_like_a_cold_one(project: Path, runtime_dir: Path) -> None:
    write_params(project, {"train": {"lr": -1}})
    env = _env(project, runtime_dir)
    outs = []
    for warm in ("0", "1"):
        cmds = json.dumps([_architecture(f"out{warm}")])
        env[SWITCH] = warm
        outs.append(run([str(project / "bin" / "dvc"), cmds], cwd=project, env=env).stdout)
    (cold_rc, cold_err), (warm_rc, warm_err) = (json.loads(x) for x in outs)
    assert cold_rc == warm_rc == 2  # a params error: a usage error
    errors = [[ln for ln in e.splitlines() if "ERROR" in ln] for e in (cold_err, warm_err)]
    assert len(errors[0]) == len(errors[1]) == 1, (cold_err, warm_err)
    assert (
        "train.lr" in errors[1][0]
        and errors[0][0].split(": ", 1)[1:] == errors[1][0].split(": ", 1)[1:]
    )
    assert "Traceback" not in warm_err
    assert not (project / "out0.json").exists() and not (project / "out1.json").exists()


@pytest.mark.slow  # starts real stage processes (15-30 s on 2 cores)
def test_without_dvc_the_stage_runs_in_the_launcher(project: Path, runtime_dir: Path) -> None:
    env = _env(project, runtime_dir)
    run(_architecture("here"), cwd=project, env=env)
    assert json.loads((project / "here.json").read_text())["total_params"] == 799_078
    (only,) = stage_runs(project, "architecture@cnn")
    assert only.data.tags["warm"] == "false"
    assert not (runtime_dir / f"mnistlab-warm-{os.getuid()}").exists()  # no server tried


def test_launcher_usage_errors(project: Path, runtime_dir: Path) -> None:
    env = _env(project, runtime_dir)
    for argv, needle in (([], "usage: python -m stages"), (["nosuch"], "unknown stage nosuch")):
        proc = run([sys.executable, "-m", "stages", *argv], cwd=REPO, env=env, check=False)
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_server_scans_count_only_this_tests_servers(tmp_path: Path, runtime_dir: Path) -> None:
    """Another suite's server on this machine (a stand-in with a server's command line:
    its socket under another runtime dir, another DVC pid) is never counted as ours."""
    other = tmp_path / "other-suite"
    sock = other / f"mnistlab-warm-{os.getuid()}" / "x.sock"
    dvc_pid = str(2**22 + os.getpid())  # above any pid_max: no real DVC process has it
    argv = ["-m", "mnistlab.harness.warm", str(sock), dvc_pid, "7"]
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv])
    try:
        deadline = time.time() + 10
        while stand_in.pid not in warm_servers(runtime_dir=other) and time.time() < deadline:
            time.sleep(0.05)  # until it has exec'd
        assert warm_servers(runtime_dir=other) == [stand_in.pid]
        assert warm_servers(int(dvc_pid)) == [stand_in.pid]
        assert stand_in.pid not in warm_servers(runtime_dir=runtime_dir)
        assert stand_in.pid not in warm_servers(int(dvc_pid) + 1)
        assert stand_in.pid not in warm_servers(7)  # its start time is no pid
        assert warm_servers(int(dvc_pid), runtime_dir=runtime_dir) == []
        with pytest.raises(TypeError, match="whose servers"):
            warm_servers()
    finally:
        stand_in.kill()
        stand_in.wait()


@pytest.mark.slow
def test_sigterm_to_a_warm_launcher_reaches_its_worker(
    project: Path, runtime_dir: Path, mnist_raw: Path
) -> None:
    """What DVC's Ctrl-C or a timeout does to a stage: the launcher passes it on."""
    write_params(project, {"train": {"epochs": 50, "train_limit": 5000}})
    train = [sys.executable, "-m", "stages", "train", "--model", "cnn", "--data", str(mnist_raw)]
    train += ["--checkpoint", "m.pt", "--metrics", "t.json", "--rows", "t.csv", "--figures", "f"]
    dvc = subprocess.Popen(
        [str(project / "bin" / "dvc"), json.dumps([_architecture("a"), train])],
        cwd=project,
        env=_env(project, runtime_dir),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        launcher = None
        while launcher is None and time.time() < deadline:
            runs = stage_runs(project, "train@cnn")
            if runs and runs[-1].info.status == "RUNNING":
                launcher = _launcher_of(int(runs[-1].data.tags["pid"]))
            time.sleep(0.2)
        assert launcher is not None, "the warm training run never started"
        os.kill(launcher, signal.SIGTERM)
        out, _ = dvc.communicate(timeout=60)
    finally:
        dvc.kill()
    (arch_rc, arch_err), (train_rc, train_err) = (json.loads(x) for x in out.splitlines())
    assert arch_rc == 0, arch_err
    assert train_rc == 130, train_err
    assert "interrupted; no partial outputs were kept" in train_err
    killed = stage_runs(project, "train@cnn")[-1]
    assert killed.info.status == "KILLED" and killed.data.tags["warm"] == "true"
    assert not (project / "m.pt").exists()


def _launcher_of(worker: int) -> int | None:
    """The launcher a warm worker acts for: the `python -m stages train` process in the
    same directory (the worker's own parent is the server)."""
    cwd = os.readlink(f"/proc/{worker}/cwd")
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv[1:4] == [b"-m", b"stages", b"train"] and os.readlink(entry / "cwd") == cwd:
                return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def _imports_torch_when_run(cmd: list[str], cwd: Path, env: dict[str, str]) -> bool:
    """Whether running stage ``cmd`` (``[name, *args]``) by hand imports torch."""
    probe = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('TORCH', 'torch' in sys.modules))\n"
        f"sys.argv = ['stages.{cmd[0]}', *{cmd[1:]!r}]\n"
        f"runpy.run_module('stages.{cmd[0]}', run_name='__main__', alter_sys=True)\n"
    )
    proc = run([sys.executable, "-c", probe], cwd=cwd, env=env)
    return "TORCH True" in proc.stdout


@pytest.mark.slow  # starts real stage processes (15-30 s on 2 cores)
def test_stages_that_run_cold_import_torch_only_to_build_models(
    project: Path, runtime_dir: Path, mnist_raw: Path
) -> None:
    """``WARM = False`` is for stages that start faster cold than by waiting for a warm
    server: download imports no torch; validate_params imports it only to build each model
    entry once (about 2 s), never MLflow. The others all import torch."""
    cold = sorted(
        p.stem
        for p in (REPO / "stages").glob("*.py")
        if not _runs_warm(importlib.util.find_spec(f"stages.{p.stem}"))
    )
    assert cold == ["download", "validate_params"]
    write_params(project, {"data": {"sources": ["local"], "local_dir": str(mnist_raw)}})
    env = _env(project, runtime_dir, PYTHONPATH=str(project))
    assert _imports_torch_when_run(["validate_params", "--out", "v.json"], project, env)
    assert not _imports_torch_when_run(["download", "--out", "raw"], project, env)
    # the positive case needs no MLflow run (importing MLflow and logging cost seconds)
    untracked = {**env, TRACKING_SWITCH: "0"}
    assert _imports_torch_when_run(_architecture("a")[3:], project, untracked)
