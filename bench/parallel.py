"""Benchmark of parallel experiments: four small queued experiments with
``dvc queue start -j 2`` against ``-j 1`` (``threads: auto`` splits the cores)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.cases import REPO, _raw

# Enough of the study for an experiment to take a few seconds of compute per stage.
QUEUE_PARAMS = {
    "train": {"epochs": 1, "train_limit": 2000, "val_size": 500},
    "evaluate": {"test_limit": 1000},
}
QUEUE_TARGET = "evaluate@cnn"  # download -> train@cnn -> evaluate@cnn


def _scratch_repo(root: Path, raw: Path) -> Path:
    """A git + DVC copy of this repo's tracked files, on the small profile, reading ``raw``."""
    import os
    import shutil
    import subprocess

    import yaml

    from mnistlab.core.config import deep_merge

    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for rel in filter(None, out.split("\0")):
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    params = yaml.safe_load((root / "params.yaml").read_text())
    data = {"data": {"sources": ["local"], "local_dir": str(raw.resolve())}}
    params = deep_merge(params, {**QUEUE_PARAMS, **data})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b"}
    env |= {"GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"]):
        if cmd[0] == "dvc" and (root / ".dvc" / "config").exists():
            continue
        subprocess.run(cmd, cwd=root, check=True, capture_output=True, env=env)
    subprocess.run(["git", "commit", "-qm", "bench"], cwd=root, check=True, env=env)
    return root


def _queue_wall(root: Path, raw: Path, jobs: int, n: int) -> float:
    """Seconds for ``n`` queued experiments to finish under ``dvc queue start -j jobs``."""
    import subprocess

    repo = _scratch_repo(root, raw)
    dvc = str(Path(sys.executable).parent / "dvc")
    quiet = {"check": True, "cwd": repo, "capture_output": True}
    subprocess.run([dvc, "repro", "download"], **quiet)  # every experiment shares it
    for seed in range(1, n + 1):
        subprocess.run([dvc, "exp", "run", QUEUE_TARGET, "--queue", "-S", f"seed={seed}"], **quiet)
    start = time.perf_counter()
    # the workers inherit its stdout: do not capture it, or this waits for them
    subprocess.run(
        [dvc, "queue", "start", "-j", str(jobs)],
        cwd=repo,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while True:
        status = subprocess.run([dvc, "queue", "status"], **quiet, text=True).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(1)
    wall = time.perf_counter() - start
    subprocess.run([dvc, "queue", "stop"], cwd=repo, capture_output=True)
    if status.count("Success") != n:
        raise SystemExit(f"bench queue: not every experiment succeeded:\n{status}")
    return wall


def queue(args: argparse.Namespace, n: int = 4) -> list[list]:
    """``n`` small experiments (train@cnn + evaluate@cnn) with ``-j 2`` against ``-j 1``."""
    import os
    import tempfile

    raw = _raw(args)
    load_before = os.getloadavg()[0]
    walls = {}
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            walls[jobs] = _queue_wall(Path(tmp), raw, jobs, n)
    load_after = os.getloadavg()[0]
    return [
        [
            f"queue {n} experiments",
            "wall seconds, dvc queue start -j 2 vs -j 1 (threads: auto)",
            f"{walls[2]:.0f}",
            f"{walls[1]:.0f}",
            f"{walls[1] / walls[2]:.2f}x",
            f"{QUEUE_TARGET} each, seeds 1-{n}; 1-min load average {load_before:.1f} before, "
            f"{load_after:.1f} after",
        ]
    ]


CASES = {"queue": queue}
