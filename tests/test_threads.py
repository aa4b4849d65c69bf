"""The `threads` param: validation, and `auto` sharing the cores among DVC queue workers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.params import params_with
from mnistlab.core.errors import ParamsError
from mnistlab.harness import procs

# Stands in for `dvc exp queue-worker <node>`: the kernel shows it as `python .../dvc exp
# queue-worker <node>`, like the real console script. Given code, it runs it as a child
# (a stage of the experiment the worker runs), else it idles.
FAKE_WORKER = """#!{python}
import subprocess, sys, time
if len(sys.argv) > 4 and not sys.argv[4].startswith("--"):
    sys.exit(subprocess.call([sys.executable, "-c", sys.argv[4]]))
time.sleep(120)
"""

AUTO_IN_CHILD = """
import os
os.sched_getaffinity = lambda pid: set(range(8))
from mnistlab.harness import procs
print(procs.auto_threads(), *procs.queue_workers())
"""


@pytest.fixture(autouse=True)
def _no_thread_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests fix the cores a process sees; the suite's own OMP_NUM_THREADS (its
    share per pytest-xdist worker, see conftest) must not cap them, here or in a child."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_threads_param_is_auto_or_a_count() -> None:
    assert params_with().threads == "auto"  # the default, from params.yaml
    assert params_with({"threads": 3}).threads == 3
    for bad in ("3", 0, -1, 2.0, True, "all", None):
        with pytest.raises(ParamsError, match=r"^params\.yaml: threads: must be 'auto' or"):
            params_with({"threads": bad})


@pytest.fixture
def fake_dvc(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "dvc"
    path.parent.mkdir()
    path.write_text(FAKE_WORKER.format(python=sys.executable))
    path.chmod(0o755)
    return path


@pytest.fixture
def workers(tmp_path: Path, fake_dvc: Path) -> Iterator[tuple[Path, str]]:
    """Two idle queue workers of the repo at ``tmp_path/repo``, and one of another repo."""
    repo, other = tmp_path / "repo", tmp_path / "other"
    (prefix,) = {p for p in procs.queue_prefixes(repo)}
    (other_prefix,) = {p for p in procs.queue_prefixes(other)}
    nodes = [f"{prefix}1@localhost", f"{prefix}2@localhost", f"{other_prefix}1@localhost"]
    started = [
        subprocess.Popen([str(fake_dvc), "exp", "queue-worker", node, *(["--clean"] * (i == 0))])
        for i, node in enumerate(nodes)
    ]
    try:
        yield repo, prefix
    finally:
        for proc in started:
            proc.kill()
            proc.wait(timeout=30)


def test_queue_workers_of_this_repo_are_counted(
    workers: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    repo, _ = workers
    deadline = time.time() + 30
    while procs.queue_workers(repo)[0] < 2 and time.time() < deadline:
        time.sleep(0.2)  # until the interpreter has exec'd
    assert procs.queue_workers(repo) == (2, False)
    assert procs.queue_workers(repo.parent / "nothing-queued") == (0, False)
    monkeypatch.setattr(procs.os, "sched_getaffinity", lambda pid: set(range(8)))
    # a `dvc repro` beside the two workers: three processes share 8 cores
    assert procs.auto_threads(repo) == 2
    assert procs.auto_threads(repo.parent / "nothing-queued") == 8
    monkeypatch.setattr(procs.os, "sched_getaffinity", lambda pid: {0})
    assert procs.auto_threads(repo) == 1  # never below one


@pytest.mark.parametrize(("omp", "want"), [("3", 3), ("16", 8), ("", 8), ("zero", 8), ("0", 8)])
def test_omp_num_threads_caps_auto(
    omp: str, want: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ray task of a sweep is given its CPUs as OMP_NUM_THREADS: `auto` keeps to them."""
    monkeypatch.setattr(procs.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert procs.auto_threads(tmp_path) == want


def test_a_stage_under_a_worker_shares_with_the_workers(
    workers: tuple[Path, str], fake_dvc: Path
) -> None:
    _, prefix = workers
    # A third worker of the same repo runs a stage: 3 workers share 8 cores, 2 each.
    out = subprocess.run(
        [str(fake_dvc), "exp", "queue-worker", f"{prefix}3@localhost", AUTO_IN_CHILD],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert out == ["2", "3", "True"]


def test_apply_threads_sets_torch_pools() -> None:
    import torch

    from mnistlab.harness.runtime import apply_threads

    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        assert apply_threads("auto") == procs.auto_threads(Path.cwd())
    finally:
        torch.set_num_threads(before)
