"""Fixtures and helpers for the team tests: the stack (``ops.team_stack``), hermetic
commands, snapshots of outputs and caches, MLflow runs on the server.

Every child process gets :func:`ops.team_stack.child_env`: dummy AWS credentials, no
``~/.aws``, no proxy, no telemetry, no caller variable that points elsewhere, so all
traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ops import team_stack as ts

REPO = Path(__file__).resolve().parents[2]

log = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
# Where stage outputs live in a repo (data, checkpoints, metrics, plots, arrays, report).
OUTPUT_DIRS = ("data", "models", "metrics", "plots", "artifacts", "report")


def run(
    cmd: list[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = 1800,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in the hermetic env plus ``env``, the venv first on PATH.

    Raises:
        AssertionError: with the tail of its output, when ``check`` and it fails.
    """
    proc = subprocess.run(
        cmd, cwd=cwd, env=hermetic(env), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def hermetic(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """:func:`ops.team_stack.child_env` with the venv first on PATH, plus ``env``."""
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return ts.child_env({"PATH": path, "PYTHONUNBUFFERED": "1", **(env or {})})


def dvc_env(stack: ts.TeamStack, tracking_uri: str | None = None) -> dict[str, str]:
    """The stack's client env without ``AWS_ENDPOINT_URL_S3``: DVC must find the endpoint
    in the remote's ``endpointurl``, as a team's clone would."""
    env = {k: v for k, v in stack.env.items() if k != "AWS_ENDPOINT_URL_S3"}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def port_open(url: str) -> bool:
    """Whether something listens at ``url``'s host and port."""
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((parts.hostname, parts.port)) == 0


def assert_stack_gone(pids: list[int], dirs: list[Path], urls: list[str]) -> None:
    """No process, directory or listening port of a stopped stack is left."""
    assert ts.alive(pids) == [], f"processes left: {ts.alive(pids)}"
    assert [d for d in dirs if d.exists()] == []
    assert [u for u in urls if port_open(u)] == []


class _BodyFailed(RuntimeError):
    """Thrown into the stack's context at the end of the session (see the fixture)."""


@pytest.fixture(scope="session", name="stack")
def stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ts.TeamStack]:
    """One team stack for the session (every team test shares it). It ends the way a
    failing body ends it: an exception thrown into ``ts.team_stack``; the teardown then
    checks that nothing of it is left (processes, folders, listening ports) and that the
    exception went on to the caller."""
    with pytest.MonkeyPatch.context() as mp:
        # in-process MLflow clients (the tests' own) send no telemetry either
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("DO_NOT_TRACK", "true")
        t0 = time.monotonic()
        context = ts.team_stack(tmp_path_factory.mktemp("team") / "stack")
        st = context.__enter__()
        log.info("team stack up in %.1f s", time.monotonic() - t0)
        pids = [p for group in st.pids().values() for p in group]
        pg = st.services["postgres"]
        assert isinstance(pg, ts.Postgres) and pg.cluster_dir is not None
        dirs = [st.tmp_dir, pg.cluster_dir]
        urls = [st.tracking_uri, st.s3_endpoint, pg.dsn]
        assert all(st.pids().values()) and all(d.exists() for d in dirs)
        try:
            yield st
        finally:
            failure = _BodyFailed("the body failed")
            passed_on = context.__exit__(_BodyFailed, failure, None) is False
    assert passed_on, "team_stack swallowed the body's exception"
    assert_stack_gone(pids, dirs, urls)


def client(uri: str) -> Any:
    """An ``MlflowClient`` for the tracking server at ``uri``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def server_runs(uri: str, experiment: str = "mnistlab") -> list[Any]:
    """Every run of ``experiment`` on the server at ``uri``."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return c.search_runs([exp.experiment_id], max_results=5000)


def ran(output: str) -> list[str]:
    """Stage names that DVC executed (in order), from its output."""
    return [ln.split("'")[1] for ln in output.splitlines() if ln.startswith("Running stage")]


def digests(root: Path, dirs: tuple[str, ...] = OUTPUT_DIRS) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``dirs`` of ``root``."""
    out = {}
    for d in dirs:
        for path in sorted((root / d).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def cache_digests(repo: Path) -> dict[str, str]:
    """``{object path: sha256}`` of the repo's DVC cache."""
    return digests(repo / ".dvc" / "cache", ("files",))


def stage_outs(repo: Path, stage: str) -> list[str]:
    """The output paths of ``stage`` as ``dvc.lock`` records them."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return [o["path"] for o in lock["stages"][stage].get("outs", [])]


def under(path: str, prefixes: list[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or inside one of them."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def kill_group_now(proc: subprocess.Popen) -> None:
    """SIGKILL the process group ``proc`` leads: a crash, not a shutdown."""
    for pid in ts.descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
