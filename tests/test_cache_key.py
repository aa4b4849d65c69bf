"""What DVC's cache key holds: the science, file by file, and never the harness.

On the session's tiny build (helpers.pipeline): bytecode that Python writes beside the
code deps changes nothing; an edit to any harness module or the launcher leaves every
stage up to date; an edit to a core module or a stage package makes exactly the stages
that import it stale, and what reads their outputs is all that may rerun.

`dvc status` lists the stages whose own deps changed; a stage downstream of one is not
listed until that stage has rerun and its outputs changed, so the claims about what may
rerun add the stages downstream in `dvc dag` (helpers.pipeline.rerun_scope).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import run
from helpers.pipeline import TinyBuild, rerun_scope, stale
from helpers.study import FORMS, MODELS

pytestmark = pytest.mark.slow


def _append_comment(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit that changes no output byte\n")


def _changed_code(repo: Path) -> set[str]:
    """Files under src/ and stages/ that differ from the commit (the build changed only
    dvc.lock and outputs)."""
    out = run(["git", "status", "--porcelain", "--", "src", "stages"], cwd=repo).stdout
    return {line[3:] for line in out.splitlines()}


def test_bytecode_beside_the_code_deps_leaves_status_clean(tiny_build: TinyBuild) -> None:
    """The build ran with PYTHONDONTWRITEBYTECODE unset: Python wrote __pycache__/*.pyc
    inside directories that stages declare as deps, and .dvcignore keeps them out."""
    repo = tiny_build.repo
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    dep_dirs = {
        repo / dep["path"]
        for stage in lock["stages"].values()
        for dep in stage.get("deps", [])
        if dep["path"].startswith(("src/", "stages/")) and (repo / dep["path"]).is_dir()
    }
    pyc = [p for p in (repo / "src").rglob("__pycache__/*.pyc")]
    assert pyc, "no bytecode under src/: was the build run with PYTHONDONTWRITEBYTECODE?"
    inside = [p for p in pyc if any(p.is_relative_to(d) for d in dep_dirs)]
    assert inside, f"no bytecode inside a declared code directory: {pyc[:5]}"
    assert (repo / "src/mnistlab/core/__pycache__").is_dir()  # beside core's file deps
    assert stale(repo) == set()  # `dvc status --json` prints {}


def test_harness_edits_leave_every_stage_up_to_date(pipeline_copy: Path) -> None:
    """The harness runs and records stages and changes no output byte: no stage depends
    on it, so editing every harness module and the launcher reruns nothing."""
    repo = pipeline_copy
    harness = sorted((repo / "src/mnistlab/harness").rglob("*.py")) + [repo / "stages/__main__.py"]
    assert len(harness) >= 9
    for path in harness:
        _append_comment(path)
    edited = {str(p.relative_to(repo)) for p in harness}
    assert _changed_code(repo) == edited
    assert stale(repo) == set()
    # the same check sees an edit to a stage's entry module
    _append_comment(repo / "stages/train.py")
    assert stale(repo) == {f"train@{m}" for m in MODELS}


def test_models_edit_makes_exactly_its_importers_stale(pipeline_copy: Path) -> None:
    """core is declared file by file: an edit to core/models.py reaches the stages that
    import it and what reads their outputs, never download. validate_params imports it
    (it builds every model entry) and reruns, but writes the same bytes, so nothing
    follows from it."""
    repo = pipeline_copy
    _append_comment(repo / "src/mnistlab/core/models.py")
    importers = {
        "validate_params",
        *(f"{kind}@{m}" for kind in ("architecture", "train", "evaluate") for m in MODELS),
        *(f"{kind}@{m}" for kind in ("visualize", "attribution") for m in MODELS),
        *(f"attack@{form}-{m}" for form in FORMS for m in MODELS),
        "transfer",
    }
    assert stale(repo) == importers
    scope = rerun_scope(repo)
    assert scope == importers | {"compare", "report"}  # they read the importers' outputs
    assert "download" not in scope


def test_noise_package_edit_reruns_only_the_noise_attack(pipeline_copy: Path) -> None:
    """An edit to one attack form's package: only that form's stages are stale, and only
    the aggregates read their outputs: transfer (the noise transfer sets), compare (every
    form's metrics, side by side) and report (every metric). (Running it adds nothing:
    test_pipeline's test_attack_knob_reruns_only_that_form checks that DVC runs exactly
    such a scope.)"""
    repo = pipeline_copy
    _append_comment(repo / "src/mnistlab/attacks/noise/__init__.py")
    noise = {f"attack@noise-{m}" for m in MODELS}
    assert stale(repo) == noise
    assert rerun_scope(repo) == noise | {"transfer", "compare", "report"}
