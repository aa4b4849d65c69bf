"""Benchmark of stage start-up under ``dvc repro``: warm stages against cold ones.

Cold (``MNISTLAB_WARM=0``) every stage is a fresh process that imports torch and MLflow
itself; warm (the default) every torch stage is forked from one process that imported
them once per execution (``mnistlab.harness.warm``). The same stages run in a scratch copy
of this repo on a small profile, alternating cold and warm runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cases import _raw
from bench.parallel import _scratch_repo

# validate_params, download, architecture x3, train@cnn, evaluate@cnn
TARGETS = ["architecture@cnn", "architecture@cnn_bn", "architecture@cnn_adv", "evaluate@cnn"]
ROUNDS = 2


def _env(warm: bool) -> dict[str, str]:
    """This environment, warm stages on or off, tracking to the scratch repo's store."""
    env = {**os.environ, "MNISTLAB_WARM": "1" if warm else "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _stage_runs_since(repo: Path, started: float) -> list:
    """The stage runs (no parents) that ``repo``'s store holds since ``started``, in order."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo}/mlflow.db")
    exp = client.get_experiment_by_name("mnistlab")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return sorted(
        (
            r
            for r in runs
            if r.info.start_time >= started * 1000 and r.data.tags.get("run_kind") == "stage"
        ),
        key=lambda r: r.info.start_time,
    )


def _execution(repo: Path, warm: bool) -> dict[str, float]:
    """One forced ``dvc repro`` of the targets; its wall time and per-stage figures."""
    dvc = str(Path(sys.executable).parent / "dvc")
    started = time.time()
    t0 = time.perf_counter()
    out = subprocess.run(
        [dvc, "repro", "--force", *TARGETS],
        cwd=repo,
        env=_env(warm),
        check=True,
        capture_output=True,
    ).stdout.decode()
    wall = time.perf_counter() - t0
    n_stages = sum(line.startswith("Running stage") for line in out.splitlines())
    runs = _stage_runs_since(repo, started)
    inside = sum((r.info.end_time - r.info.start_time) / 1000 for r in runs)
    startups = [float(r.data.tags["startup_seconds"]) for r in runs]
    return {
        "stages": n_stages,
        "wall": wall,
        "outside": (wall - inside) / n_stages,
        "startup": statistics.median(startups),
        "warm": sum(r.data.tags.get("warm") == "true" for r in runs),
    }


# A stand-in for `dvc` (the launcher looks for a process of that name above it) that
# runs stage commands one after another and reports each one's wall time: what a stage
# pays outside its MLflow run, without DVC's own bookkeeping between stages.
STAND_IN = """#!{python}
import json, subprocess, sys, time
for cmd in json.loads(sys.argv[1]):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    print(time.perf_counter() - t, flush=True)
"""
STAND_IN_RUNS = 6


def _stand_in(repo: Path, warm: bool) -> list[float]:
    """Seconds each of ``STAND_IN_RUNS`` stages spent outside its MLflow run (start-up
    before it, closing and exiting after it) under the stand-in ``dvc``."""
    import json

    script = repo / "bin" / "dvc"
    script.parent.mkdir(exist_ok=True)
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(0o755)
    out = repo / "bench-out"
    cmds = [
        [sys.executable, "-m", "stages", *args]
        for i in range(STAND_IN_RUNS // 2)
        for args in (
            ["architecture", "--model", "cnn", "--metrics", f"{out}/a{i}.json"]
            + ["--table", f"{out}/a{i}.md"],
            ["evaluate", "--model", "cnn", "--data", "data/MNIST/raw"]
            + ["--checkpoint", "models/cnn.pt", "--metrics", f"{out}/e{i}.json"]
            + ["--rows", f"{out}/e{i}.csv", "--figures", f"{out}/e{i}"],
        )
    ]
    started = time.time()
    walls = subprocess.run(
        [str(script), json.dumps(cmds)], cwd=repo, env=_env(warm), check=True, capture_output=True
    ).stdout.split()
    runs = _stage_runs_since(repo, started)
    assert len(runs) == len(cmds) == len(walls), (len(runs), len(cmds), len(walls))
    return [
        float(w) - (r.info.end_time - r.info.start_time) / 1000
        for w, r in zip(walls, runs, strict=True)
    ]


def warm(args: argparse.Namespace) -> list[list]:
    """Per-stage cost outside the stages' work, warm vs cold, in the same scratch repo."""
    raw = _raw(args)
    best: dict[bool, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = _scratch_repo(Path(tmp), raw)
        subprocess.run(
            [str(Path(sys.executable).parent / "dvc"), "repro", *TARGETS],
            cwd=repo,
            check=True,
            capture_output=True,
        )  # a first run fills the caches both modes then share
        costs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(ROUNDS):
            for mode in (False, True):
                got = _execution(repo, mode)
                if mode not in best or got["wall"] < best[mode]["wall"]:
                    best[mode] = got
                costs[mode] += _stand_in(repo, mode)[1:]  # the first warm one starts the server
    cold, hot = best[False], best[True]
    paid = {mode: statistics.median(c) for mode, c in costs.items()}
    n = int(hot["stages"])
    note = f"{n} stages of `dvc repro --force` ({int(hot['warm'])} of them warm), best of {ROUNDS}"
    return [
        [
            "stage cost outside its work, warm",
            "seconds a stage process lives outside its MLflow run (before + after), median",
            f"{paid[True]:.2f}",
            f"{paid[False]:.2f}",
            f"{paid[False] / paid[True]:.1f}x",
            f"baseline: cold; architecture@cnn and evaluate@cnn x{STAND_IN_RUNS // 2} each "
            f"under a stand-in dvc (no DVC bookkeeping), after the first, {ROUNDS} rounds",
        ],
        [
            "stage start-up, warm",
            "seconds from a stage's process start to its MLflow run open (median)",
            f"{hot['startup']:.2f}",
            f"{cold['startup']:.2f}",
            f"{cold['startup'] / hot['startup']:.1f}x",
            f"baseline: cold (MNISTLAB_WARM=0); {note}",
        ],
        [
            "stage overhead, warm",
            "seconds a stage costs outside its MLflow run (wall - runs) / stages",
            f"{hot['outside']:.2f}",
            f"{cold['outside']:.2f}",
            f"{cold['outside'] / hot['outside']:.1f}x",
            "start-up, run close, and DVC's own bookkeeping (hashing, dvc.lock) per stage",
        ],
        [
            "dvc repro, warm",
            "wall seconds of the same forced repro",
            f"{hot['wall']:.1f}",
            f"{cold['wall']:.1f}",
            f"{cold['wall'] / hot['wall']:.2f}x",
            note,
        ],
    ]


CASES = {"warm": warm}
