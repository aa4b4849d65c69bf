"""The tiny pipeline, built once per test session, and cheap private copies of it.

``tests/conftest.py`` builds it (fixture ``tiny_build``) the first time a test asks: a
scratch repo (:func:`helpers.scratch.make_scratch_repo`: the project's files, the tiny
params profile, git and DVC) on which one full ``dvc repro`` ran the way a user runs it:
warm stages, tracked in the repo's own ``mlflow.db``, and Python free to write bytecode
beside the code deps (``PYTHONDONTWRITEBYTECODE`` unset).

Tests that only read it use ``tiny_build.repo`` as it is (reading files, the MLflow
store in-process, ``dvc status``). A test that changes anything, or runs anything that
could, works on a copy (:meth:`TinyBuild.copy`, fixtures ``pipeline_copy`` and
``tracked_copy``): every workspace file is copied, and only ``.dvc/cache`` is
hard-linked. That is safe because DVC never writes a cache object in place (it writes
new objects under new names and unlinks), and the build's outputs in the workspace are
copies of the cache, not links to it (``cache.type`` is DVC's default ``reflink,copy``;
:func:`build` checks it), so a test that writes into a copied output cannot reach the
shared original. A copy takes well under a second (~60 MB, most of it MNIST).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from filelock import FileLock, Timeout

from helpers.scratch import make_scratch_repo, run

# What MLflow keeps in a repo: copied (and re-pointed at the copy) only when asked for.
STORE = ("mlflow.db", "mlruns")


@dataclass(frozen=True)
class TinyBuild:
    """A scratch repo after one full ``dvc repro``; never change anything in ``repo``."""

    repo: Path
    log: str  # the stdout of its `dvc repro`
    seconds: float

    @property
    def ran(self) -> set[str]:
        """The stages its `dvc repro` executed."""
        return ran(self.log)

    def copy(self, dest: Path, *, runs: bool = False) -> Path:
        """A private copy of the build at ``dest`` (see the module docstring).

        With ``runs`` it holds the build's MLflow store too (``mlflow.db`` and
        ``mlruns``), re-pointed at the copy so that new runs and artifacts land in it;
        without, it has none (the first tracked stage creates one).
        """
        return copy_repo(self.repo, dest, runs=runs)


def ran(output: str) -> set[str]:
    """Stage names that `dvc repro` executed, from its output."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def build(root: Path, mnist_raw: Path) -> TinyBuild:
    """Make the scratch repo under ``root`` and run the whole pipeline in it."""
    repo = make_scratch_repo(root, mnist_raw)
    t0 = time.monotonic()
    # The stages import the repo's own src, as in a clone whose `make` installed it (the
    # venv's editable install points at the checkout the tests run from).
    env = {"PYTHONPATH": str(repo / "src")}
    out = run(["dvc", "repro"], cwd=repo, env=env, unset=["PYTHONDONTWRITEBYTECODE"], timeout=3600)
    seconds = time.monotonic() - t0
    # beside the repo, for a person to read
    (root / "repro.log").write_text(out.stdout + "\n--- stderr\n" + out.stderr)
    linked = [
        str(p.relative_to(repo))
        for d in ("data", "models", "plots", "artifacts", "report")
        for p in (repo / d).rglob("*")
        if p.is_file() and p.stat().st_nlink > 1
    ]
    assert linked == [], f"workspace outputs linked to the DVC cache: {linked[:5]}"
    return TinyBuild(repo, out.stdout, seconds)


class SharedBuild:
    """The tiny build, made once per test run however many pytest-xdist workers ask.

    The folder ``root`` is shared by every worker of one run (the parent of their
    base temp dirs; the base temp dir itself with ``-n 0``). Each worker starts a
    thread that tries ``root/build.lock`` without waiting: the one that gets it builds
    (its own tests go on meanwhile) and writes the build's description (``build.json``)
    or why it failed (``build.error``) before letting go; the others' threads end at
    once. :meth:`get` waits on the lock and reads what was left. A failed build is not
    retried: every test that needs it fails with the same message. (The lock is taken
    and released in the one thread: filelock counts its holders per thread.)"""

    def __init__(self, root: Path, mnist_raw: Path) -> None:
        self.root, self.mnist_raw = root, mnist_raw
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Build in the background now, unless another worker already does or did."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._build_if_first, daemon=True)
            self.thread.start()

    def _lock(self) -> FileLock:
        return FileLock(self.root / "build.lock")

    def _done(self) -> bool:
        return (self.root / "build.json").exists() or (self.root / "build.error").exists()

    def _build_if_first(self) -> None:
        lock = self._lock()
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return  # another worker builds
        try:
            if not self._done():
                self._build()
        finally:
            lock.release()

    def _build(self) -> None:
        try:
            got = build(self.root / "tiny-build", self.mnist_raw)
            description = {"repo": str(got.repo), "log": got.log, "seconds": got.seconds}
            tmp = self.root / "build.json.tmp"
            tmp.write_text(json.dumps(description))
            tmp.rename(self.root / "build.json")
        except BaseException as exc:  # noqa: BLE001 - told to every test that needs it
            (self.root / "build.error").write_text(f"the tiny build failed: {exc}")

    def get(self) -> TinyBuild:
        """The build, waiting for it (and building it here if nobody did)."""
        self.start()
        assert self.thread is not None
        self.thread.join()
        with self._lock():  # held by whoever builds until it is done
            if not self._done():
                self._build()
            error = self.root / "build.error"
            if error.exists():
                raise AssertionError(error.read_text())
            d = json.loads((self.root / "build.json").read_text())
        return TinyBuild(Path(d["repo"]), d["log"], d["seconds"])

    def finish(self) -> None:
        """Wait for a build this process started (never leave it half-done)."""
        if self.thread is not None:
            self.thread.join()


def _link_or_copy(cache: Path):
    def copy(src: str, dst: str) -> str:
        if Path(src).is_relative_to(cache):
            os.link(src, dst)  # DVC never writes a cache object in place
        else:
            shutil.copy2(src, dst)
        return dst

    return copy


def copy_repo(src: Path, dest: Path, *, runs: bool = False) -> Path:
    """Copy the repo ``src`` to ``dest``: files copied, ``.dvc/cache`` hard-linked,
    without ``.dvc/tmp`` (DVC's locks and hash state, rebuilt on demand) and, unless
    ``runs``, without the MLflow store."""
    skip = {src / ".dvc" / "tmp"}
    if not runs:
        skip.update(src / name for name in STORE)

    def ignore(directory: str, names: list[str]) -> list[str]:
        here = Path(directory)
        return [n for n in names if here / n in skip or n.startswith("mlflow.db-")]

    shutil.copytree(
        src, dest, symlinks=True, ignore=ignore, copy_function=_link_or_copy(src / ".dvc" / "cache")
    )
    if runs and (dest / "mlflow.db").exists():
        repoint_store(dest, src, dest)
    return dest


def repoint_store(repo: Path, old: Path, new: Path) -> None:
    """Rewrite every text value in ``repo``'s MLflow database that names a path under
    ``old`` (the experiment's artifact location, each run's artifact URI, logged models,
    model versions) to name the same path under ``new``; and the ``artifact_path`` each
    logged model's ``MLmodel`` file records."""
    before, after = f"{old}/", f"{new}/"
    for mlmodel in (repo / "mlruns").rglob("MLmodel"):
        mlmodel.write_text(mlmodel.read_text().replace(before, after))
    db = repo / "mlflow.db"
    con = sqlite3.connect(db)
    try:
        with con:
            tables = [
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            for table in tables:
                for column in [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]:
                    con.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                        (before, after, before),
                    )
            left = [
                (table, column)
                for table in tables
                for column in [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
                if con.execute(
                    f'SELECT count(*) FROM "{table}" WHERE instr("{column}", ?) > 0', (before,)
                ).fetchone()[0]
            ]
        assert left == [], f"{db}: still names {old}: {left}"
    finally:
        con.close()


def roll_back_to_downloaded(repo: Path) -> Path:
    """Make a copy of the build look like a fresh scratch repo after `dvc repro download`:
    no output of any stage after download (no checkpoint, figure, array or report), the
    committed metrics and plot series back from git, and no MLflow store."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for name, stage in lock["stages"].items():
        if name in ("validate_params", "download"):
            continue
        for out in stage.get("outs", []):
            path = repo / out["path"]
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    # the `cache: false` outputs git tracks: as the project committed them
    run(["git", "checkout", "HEAD", "--", "metrics", "plots"], cwd=repo)
    # folders that hold nothing but outputs (and the .gitignore DVC wrote for them)
    for name in ("models", "report", *STORE):
        path = repo / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    assert not list((repo / "plots").rglob("*.png")) and not list(repo.rglob("*.npz"))
    return repo


# ----------------------------------------------------------------- what a change reruns


def stale(repo: Path, *targets: str) -> set[str]:
    """The stages `dvc status` lists as changed: their own deps, params, command or outs
    differ from dvc.lock. A stage downstream of a changed one is not listed (its deps
    have not changed yet); :func:`rerun_scope` adds those."""
    out = run(["dvc", "status", "--json", *targets], cwd=repo).stdout
    return set(json.loads(out or "{}"))


def dag_edges(repo: Path) -> set[tuple[str, str]]:
    """``(upstream, downstream)`` stage pairs of the pipeline, from `dvc dag --dot`."""
    out = run(["dvc", "dag", "--dot"], cwd=repo).stdout
    edges = set()
    for line in out.splitlines():
        if "->" in line:
            up, down = (part.strip().strip(";").strip().strip('"') for part in line.split("->"))
            edges.add((up, down))
    assert edges, out
    return edges


def downstream(edges: set[tuple[str, str]], stages: set[str]) -> set[str]:
    """``stages`` and every stage that reads, directly or not, what they write."""
    scope = set(stages)
    grew = True
    while grew:
        new = {down for up, down in edges if up in scope} - scope
        scope |= new
        grew = bool(new)
    return scope


def rerun_scope(repo: Path) -> set[str]:
    """What `dvc repro` may run now: the stale stages and everything downstream of them.

    DVC runs each stale stage, and a downstream one only if an output it reads comes out
    different, so the stages it really runs lie between :func:`stale` and this. Any
    params change stales ``validate_params``, whose marker every stage reads; it writes
    the same bytes whenever params are valid, so it is counted but not followed."""
    changed = stale(repo)
    return downstream(dag_edges(repo), changed - {"validate_params"}) | changed
