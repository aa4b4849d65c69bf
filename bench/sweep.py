"""Benchmark of a sweep on Ray (ops.sweep): four small variants on a cluster of two
single-CPU worker nodes against the same sweep on one such node. Each is a real local
cluster (ops.ray_cluster: a head and separate `ray start` worker processes), each sweep
starts from its own fresh scratch repo, so nothing is read back from a previous one."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.cases import REPO, _raw
from bench.parallel import QUEUE_TARGET, _scratch_repo

N_VARIANTS = 4
SEEDS = list(range(1, N_VARIANTS + 1))
GRID = {"name": "bench", "targets": [QUEUE_TARGET], "grid": {"seed": SEEDS}}


def _sweep_wall(root: Path, raw: Path, workers: int) -> float:
    """Seconds of ``python -m ops.sweep`` for the grid on ``workers`` single-CPU nodes."""
    from ops.ray_cluster import local_cluster

    repo = _scratch_repo(root, raw)
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "repro", QUEUE_TARGET], cwd=repo, check=True, capture_output=True)
    (repo / "sweeps").mkdir(exist_ok=True)
    (repo / "sweeps" / "bench.yaml").write_text(yaml.safe_dump(GRID, sort_keys=False))
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b"}
    env |= {"GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "built"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True, env=env)
    with local_cluster(workers=workers) as cluster:
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {**env, **cluster.client_env, "PYTHONPATH": path}
        env.pop("MLFLOW_TRACKING_URI", None)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "ops.sweep", "sweeps/bench.yaml"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench sweep: the sweep failed:\n{proc.stdout[-2000:]}{proc.stderr}")
    return wall


def sweep(args: argparse.Namespace) -> list[list]:
    """Throughput of 4 variants on two single-CPU worker nodes vs one."""
    raw = _raw(args)
    load_before = os.getloadavg()[0]
    walls = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            walls[workers] = _sweep_wall(Path(tmp), raw, workers)
    load_after = os.getloadavg()[0]
    return [
        [
            f"sweep {N_VARIANTS} variants on Ray",
            "wall seconds, two single-CPU worker nodes vs one",
            f"{walls[2]:.0f}",
            f"{walls[1]:.0f}",
            f"{walls[1] / walls[2]:.2f}x",
            f"ops.sweep, {QUEUE_TARGET} each (seeds 1-{N_VARIANTS}), a fresh clone per task; "
            f"1-min load average {load_before:.1f} before, {load_after:.1f} after",
        ]
    ]


CASES = {"sweep": sweep}
