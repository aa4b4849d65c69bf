"""Where a stage runs and what it reads: project root, commit, pipeline execution, dataset.

The facts :mod:`mnistlab.harness.tracking` records about a stage run: none of them needs
MLflow, so they are cheap to compute (and to test) on their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from mnistlab.harness import procs

DATASET_NAME = "mnist"


def find_root(start: str | Path | None = None) -> Path:
    """The project root: the nearest ancestor holding ``dvc.yaml`` (else ``start``)."""
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return here


def project_root(env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> Path:
    """``DVC_ROOT`` when DVC runs the stage (the real repo, even for queued experiments
    running in a temp copy), else the project root above ``cwd``."""
    env = os.environ if env is None else env
    return (Path(env["DVC_ROOT"]) if env.get("DVC_ROOT") else find_root(cwd)).resolve()


def git_commit(cwd: str | Path | None = None) -> str:
    """The full commit hash checked out at ``cwd`` ('unknown' outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (how evaluate finds the model that train logged)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- executions


@dataclasses.dataclass(frozen=True)
class Execution:
    """One pipeline execution: the parent run's name and what identifies its dvc process.

    Attributes:
        key: ``<host>/<boot id>/<pid>/<start>`` of the dvc process, shared by its stages.
    """

    name: str
    key: str
    host: str
    pid: int
    start: int


def repro_name(root: str | Path) -> str:
    """Parent-run name of a plain ``dvc repro``: short commit + digest of params.yaml."""
    try:
        digest = hashlib.sha256((Path(root) / "params.yaml").read_bytes()).hexdigest()[:8]
    except OSError:
        digest = "none"
    return f"{git_commit(root)[:7]}-params-{digest}"


def find_execution(
    env: Mapping[str, str] | None = None, cwd: str | Path | None = None
) -> Execution | None:
    """The pipeline execution that runs this process, or None without a dvc ancestor."""
    env = os.environ if env is None else env
    dvc = procs.dvc_ancestor()
    if dvc is None:
        return None
    name = env.get("DVC_EXP_NAME") or repro_name(find_root(cwd))
    host = socket.gethostname()
    key = f"{host}/{procs.boot_id()[:8]}/{dvc.pid}/{dvc.start}"
    return Execution(name=name, key=key, host=host, pid=dvc.pid, start=dvc.start)


# --------------------------------------------------------------------------- datasets


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """MNIST as an MLflow dataset: where it was read and a digest of its files' MD5s."""

    name: str
    source: str
    digest: str
    md5: dict[str, str]


def mnist_dataset(raw_dir: str | Path, cwd: str | Path | None = None) -> DatasetInfo:
    """The dataset a stage reads from ``raw_dir``, already MD5-verified by ``load_mnist``.

    The source is the directory in the real repo (``DVC_ROOT``), also for a queued
    experiment that read a temp copy of it; the digest is an MD5 of the four files'
    MD5s, so the same bytes give the same digest wherever they were read.
    """
    from mnistlab.core.mnist import MNIST_FILES

    raw = Path(raw_dir).resolve()
    with contextlib.suppress(ValueError):
        raw = project_root(cwd=cwd) / raw.relative_to(find_root(cwd))
    md5 = {f.name: f.md5 for f in MNIST_FILES}
    digest = hashlib.md5("".join(f"{k}:{v}\n" for k, v in md5.items()).encode()).hexdigest()
    return DatasetInfo(name=DATASET_NAME, source=str(raw), digest=digest, md5=md5)
