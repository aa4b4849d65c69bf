"""Scratch repos for `dvc repro`: this project's files in a fresh git + DVC repo, on a tiny
params profile, and commands run with the venv first on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

from mnistlab.core.config import deep_merge

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(
    cmd: list[str],
    cwd: Path,
    env: dict | None = None,
    check: bool = True,
    timeout: int = 1800,
    unset: Iterable[str] = (),
) -> subprocess.CompletedProcess:
    """Run a command with the venv first on PATH, without the caller's
    MLFLOW_TRACKING_URI and the variables in ``unset``; show its output when it fails."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    for name in unset:
        full_env.pop(name, None)
    full_env.update(env or {})
    proc = subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def git_files(root: Path = REPO) -> list[str]:
    """Files git tracks or would track (untracked but not ignored), as a clone would hold."""
    out = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root).stdout
    return [f for f in out.split("\0") if f and (root / f).is_file()]


def write_params(repo: Path, overrides: dict) -> None:
    """Deep-merge ``overrides`` into ``repo/params.yaml``."""
    path = repo / "params.yaml"
    params = deep_merge(yaml.safe_load(path.read_text()), overrides)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _tiny_models() -> dict:
    """Every model of params.yaml in one epoch; an adversarially trained one with 2 steps."""
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    tiny: dict = {}
    for name, entry in models.items():
        shrink: dict = {"epochs": 1} if entry.get("epochs") is not None else {}
        if entry.get("adversarial"):
            shrink["adversarial"] = {"steps": 2, "check_images": 100, "check_steps": 3}
        tiny[name] = shrink
    return tiny


# A profile that makes the whole pipeline take a couple of minutes on a 2-core CPU.
TINY = {
    "data": {"sources": ["local"]},  # local_dir is filled in with the cached download
    "train": {"epochs": 1, "train_limit": 2000, "val_size": 500, "log_every": 5},
    "models": _tiny_models(),
    "evaluate": {"test_limit": 1000},
    "visualize": {"occlusion": {"n_images": 4, "stride": 3}},
    "attribution": {
        "n_images": 3,
        "ig_steps": 8,
        "ig_noise_samples": 2,
        "smoothgrad": {"samples": 4},
        "occlusion": {"stride": 2},
        "deletion_steps": 8,
    },
    "attacks": {
        "class_model": {"steps": 20, "synthesis": {"steps": 20, "step_size": 0.75}},
        "targeted": {"steps": 20},
        "noise": {"steps": 20},
        "fgsm": {"n_images": 100, "eps": [0.0, 0.1, 0.3]},
        "pgd": {"n_images": 100, "eps": [0.0, 0.1, 0.3], "steps": 5},
        "strong": {
            "n_images": 100,
            "eps": [0.1, 0.3],
            "pgd_steps": 5,
            "n_iter": 10,
            "square_queries": 100,
            "standard": {"square_queries": 200},  # eps 0.3, 9 targets: the shipped budget's shape
            "min_eps": {"n_images": 10, "tol": 0.05},
        },
    },
    "transfer": {"n_images": 100},
}

GIT_USER = ["-c", "user.name=t", "-c", "user.email=t@t"]


def commit_all(repo: Path, message: str) -> None:
    """``git add -A`` and commit everything in ``repo`` (DVC's outputs are git-ignored)."""
    run(["git", "add", "-A"], cwd=repo)
    run(["git", *GIT_USER, "commit", "-qm", message], cwd=repo)


def make_scratch_repo(tmp_path: Path, mnist_raw: Path) -> Path:
    """A fresh git + DVC repo holding this project's files, on the tiny profile.

    Never copies .venv, data, models or the DVC cache; MNIST comes from the
    verified cache through the `local` source.
    """
    repo = tmp_path / "repo"
    for rel in git_files():
        dst = repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst)
    tiny = {**TINY, "data": {**TINY["data"], "local_dir": str(mnist_raw)}}
    write_params(repo, tiny)
    run(["git", "init", "-q"], cwd=repo)
    if not (repo / ".dvc" / "config").exists():
        run(["dvc", "init", "-q"], cwd=repo)
    commit_all(repo, "scratch")
    return repo
