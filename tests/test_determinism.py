"""The same params give byte-identical outputs on CPU, however the stages run; another
seed does not.

The session's tiny build ran the way a user runs it: warm (workers forked from one
process with torch imported, see mnistlab.harness.warm) and tracked in MLflow. A copy of
it reruns a model's stages cold and untracked (``MNISTLAB_WARM=0``: every stage its own
process; ``MNISTLAB_TRACKING=0``: no MLflow at all), so the same bytes say both that
running warm and that recording in MLflow change no output byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from conftest import run, write_params
from helpers.pipeline import TinyBuild, ran
from helpers.runs import stage_runs
from helpers.study import FORMS

pytestmark = pytest.mark.slow

MODEL = "cnn_bn"  # BatchNorm is where nondeterminism would hide
# The model's stages, rerun one by one (`dvc repro --force --single-item`): validate_params
# and download import no torch and write what they check or copy.
FORCED = {
    f"architecture@{MODEL}",
    f"train@{MODEL}",
    f"evaluate@{MODEL}",
    f"visualize@{MODEL}",
    *(f"attack@{form}-{MODEL}" for form in FORMS if form != "strong"),
}
TIMING_KEYS = {"train_seconds", "seconds_per_epoch", "images_per_second"}
UNTRACKED_COLD = {"MNISTLAB_WARM": "0", "MNISTLAB_TRACKING": "0"}


def _outputs(repo: Path, stages: set[str]) -> list[Path]:
    """The metrics JSON, checkpoints, arrays and plot CSVs that ``stages`` write."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    paths = [repo / out["path"] for name in stages for out in lock[name].get("outs", [])]
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return [f for f in files if f.suffix in (".json", ".pt", ".npz", ".csv")]


def _snapshot(repo: Path, stages: set[str]) -> dict[str, str]:
    """sha256 of each such output (train metrics without their timings)."""
    out = {}
    for f in _outputs(repo, stages):
        rel = str(f.relative_to(repo))
        if rel.startswith("metrics/train/"):
            body = {k: v for k, v in json.loads(f.read_text()).items() if k not in TIMING_KEYS}
            blob = json.dumps(body, sort_keys=True).encode()
        else:
            blob = f.read_bytes()
        out[rel] = hashlib.sha256(blob).hexdigest()
    return out


def test_same_params_same_bytes_other_seed_differs(
    tiny_build: TinyBuild, pipeline_copy: Path
) -> None:
    built, repo = tiny_build.repo, pipeline_copy
    # the build: every stage that imports torch ran warm (validate_params logs no run,
    # download says WARM = False), and each was recorded in MLflow
    warm = {r.info.run_name: r.data.tags["warm"] for r in stage_runs(built)}
    assert FORCED - {f"architecture@{MODEL}"} <= set(warm)  # (up to date in a clone)
    assert warm == {n: str(n != "download").lower() for n in warm}
    first = _snapshot(built, FORCED)
    assert len(first) >= 12
    assert {f"models/{MODEL}.pt", f"artifacts/attack/noise-{MODEL}.npz"} <= set(first)

    # the copy: the same stages again, cold and untracked
    forced = ["dvc", "repro", "--force", "--single-item", *sorted(FORCED)]
    out = run(forced, cwd=repo, env=UNTRACKED_COLD)
    assert ran(out.stdout) == FORCED
    assert not (repo / "mlflow.db").exists() and not (repo / "mlruns").exists()
    second = _snapshot(repo, FORCED)
    assert second == first

    write_params(repo, {"seed": 7})
    seeded = [f"evaluate@{MODEL}", f"attack@pgd-{MODEL}", f"architecture@{MODEL}"]
    run(["dvc", "repro", *seeded], cwd=repo, env={"MNISTLAB_TRACKING": "0"})
    third = _snapshot(repo, FORCED)
    changed = {k for k in first if third.get(k) != first[k]}
    assert f"models/{MODEL}.pt" in changed
    assert f"metrics/evaluate/{MODEL}.json" in changed
    assert f"metrics/attack/pgd-{MODEL}.json" in changed
    assert f"metrics/architecture/{MODEL}.json" not in changed  # does not depend on the seed
