"""The same params twice give byte-identical outputs on CPU; another seed does not.

The first run is cold (``MNISTLAB_WARM=0``: every stage its own process) and the second
warm (workers forked from one process with torch imported, see mnistlab.harness.warm), so
the same bytes also say that running warm changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import run, write_params
from helpers.runs import stage_runs

pytestmark = pytest.mark.slow

MODEL = "cnn_bn"  # BatchNorm is where nondeterminism would hide
TARGETS = [
    "architecture",
    f"evaluate@{MODEL}",
    f"visualize@{MODEL}",
    *(f"attack@{form}-{MODEL}" for form in ("class_model", "targeted", "noise", "fgsm", "pgd")),
]
TIMING_KEYS = {"train_seconds", "seconds_per_epoch", "images_per_second"}


def _snapshot(repo: Path) -> dict[str, str]:
    """sha256 of every metrics JSON (train metrics without timings), checkpoint and array."""
    files = [
        *sorted((repo / "metrics").rglob("*.json")),
        repo / "models" / f"{MODEL}.pt",
        *sorted((repo / "artifacts").rglob("*.npz")),
        *sorted((repo / "plots").rglob("*.csv")),
    ]
    out = {}
    for f in files:
        rel = str(f.relative_to(repo))
        if rel.startswith("metrics/train/"):
            body = {k: v for k, v in json.loads(f.read_text()).items() if k not in TIMING_KEYS}
            blob = json.dumps(body, sort_keys=True).encode()
        else:
            blob = f.read_bytes()
        out[rel] = hashlib.sha256(blob).hexdigest()
    return out


def test_same_params_same_bytes_other_seed_differs(scratch_repo: Path) -> None:
    repo = scratch_repo
    run(["dvc", "repro", *TARGETS], cwd=repo, env={"MNISTLAB_WARM": "0"})
    first = _snapshot(repo)
    assert len(first) >= 12
    cold = len(stage_runs(repo))
    assert not any(r.data.tags["warm"] == "true" for r in stage_runs(repo))
    run(["dvc", "repro", "--force", *TARGETS], cwd=repo)  # reruns their upstream too
    second = _snapshot(repo)
    assert second == first
    warm = {r.info.run_name: r.data.tags["warm"] for r in stage_runs(repo)[cold:]}
    assert len(warm) >= 10
    # every stage but the two that import no torch (they say WARM = False)
    assert warm == {n: str(n not in ("validate_params", "download")).lower() for n in warm}

    write_params(repo, {"seed": 7})
    run(["dvc", "repro", *TARGETS], cwd=repo)
    third = _snapshot(repo)
    changed = {k for k in first if third.get(k) != first[k]}
    assert f"models/{MODEL}.pt" in changed
    assert f"metrics/evaluate/{MODEL}.json" in changed
    assert f"metrics/attack/pgd-{MODEL}.json" in changed
    assert f"metrics/architecture/{MODEL}.json" not in changed  # does not depend on the seed
