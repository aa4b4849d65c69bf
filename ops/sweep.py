"""Sweeps on Ray: one DVC experiment per Ray task, each in a fresh clone of a pushed commit.

    python -m ops.sweep sweeps/lr.yaml [--git-remote origin] [--dvc-remote NAME]
                        [--cpus-per-task 1] [--retries 2] [--workdir DIR]

The recipe teams use on Slurm (Exscientia's rdvc), on Ray: the driver refuses a dirty tree
or a commit the git remote does not hold; each task clones the remote at that commit into
its own folder with its own DVC cache (no shared filesystem assumed), runs ``dvc exp run
-n <sweep>-<variant> -S ... --pull --allow-missing`` against the shared DVC remote (what
was computed anywhere comes back from the run-cache), logs to the tracking server and
``dvc exp push``es the experiment (git refs, data, run-cache). The driver shows progress,
``dvc exp pull``s the results, writes one table (``sweeps/results/<sweep>.md`` and
``.csv``) and nests every variant's pipeline run under one MLflow run for the sweep.

Without ``RAY_ADDRESS``, ``--git-remote`` and ``MLFLOW_TRACKING_URI`` it runs on this
machine alone: an embedded Ray, this repository as the git remote, the repo's default DVC
remote (a local folder) and ``mlflow.db``. A grid file::

    targets: [evaluate@cnn]       # optional: what each experiment reproduces (default all)
    grid:                         # every combination of these
      train.lr: [0.001, 0.003]
      seed: [0, 1]
    variants:                     # optional: explicit variants, added to the grid's
      - {train.lr: 0.01, seed: 7}
    set: {train.train_limit: 5000}  # optional: applied to every variant

Every variant is validated with the same types as ``params.yaml`` before anything runs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

EXIT_USAGE = 2
EXIT_FAILED = 1
EXPERIMENT = "mnistlab"  # the MLflow experiment the stages log to
SWEEP_RUN_ENV = "MNISTLAB_SWEEP_RUN_ID"  # harness.tracking_store nests variant parents under it
GRID_KEYS = {"targets", "grid", "variants", "set", "name"}


class SweepError(Exception):
    """A sweep that cannot start; its message is one line naming the cause."""


# ----------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Variant:
    """One experiment of a sweep: its unique name and its ``-S`` overrides."""

    name: str
    overrides: dict[str, Any]

    def set_args(self) -> list[str]:
        """``dvc exp run`` arguments, ``-S ++key=value`` with values in YAML flow style.

        ``++`` (Hydra's add-or-override, which ``-S`` follows) sets a key that params.yaml
        does not list, e.g. a training key of a short model entry; the grid was validated
        against params.yaml's types already, so no typo gets through.
        """
        return [a for k, v in self.overrides.items() for a in ("-S", f"++{k}={_flow(v)}")]


@dataclass(frozen=True)
class Grid:
    name: str
    targets: list[str]
    swept: list[str]  # the keys that differ between variants, in the grid file's order
    variants: list[Variant]


def _flow(value: Any) -> str:
    """A value as ``dvc exp run -S`` parses it back (YAML), on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()  # a plain scalar ends its document with "..."


def _dotted(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def variant_name(sweep: str, overrides: Mapping[str, Any]) -> str:
    """``<sweep>-<8 hex>``: stable for the same overrides, so a rerun finds what it pushed."""
    text = json.dumps(dict(sorted(overrides.items())), sort_keys=True, default=str)
    return f"{sweep}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def load_grid(path: str | Path, params_path: str | Path = "params.yaml") -> Grid:
    """Read and validate a grid file against ``params_path``.

    Raises:
        SweepError: unreadable file, unknown grid key, an empty grid, or a variant whose
            params ``validate_params`` would reject (the message names the variant).
    """
    from mnistlab.core.config import deep_merge, load_params, parse_params
    from mnistlab.core.errors import ParamsError

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as err:
        raise SweepError(f"{path}: cannot read the grid file ({err})") from None
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: malformed YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping with `grid` and/or `variants`")
    if unknown := sorted(set(raw) - GRID_KEYS):
        raise SweepError(f"{path}: unknown key {unknown[0]!r} (expected {sorted(GRID_KEYS)})")
    name = str(raw.get("name") or path.stem)
    if not name.replace("-", "").replace("_", "").isalnum():
        raise SweepError(f"{path}: sweep name {name!r}: use letters, digits, '-' and '_'")
    grid, listed, common = raw.get("grid") or {}, raw.get("variants") or [], raw.get("set") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise SweepError(f"{path}: `grid` maps each params key to a non-empty list of values")
    if not isinstance(listed, list) or not all(isinstance(v, dict) for v in listed):
        raise SweepError(f"{path}: `variants` is a list of {{params key: value}} mappings")
    if not isinstance(common, dict):
        raise SweepError(f"{path}: `set` maps params keys to one value each")
    targets = raw.get("targets") or []
    if isinstance(targets, str):
        targets = [targets]
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    combos = (combos if grid else []) + [dict(v) for v in listed]
    if not combos:
        raise SweepError(f"{path}: no variants (give `grid` and/or `variants`)")

    try:
        base = yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))
        load_params(params_path)
    except (OSError, ParamsError, yaml.YAMLError) as err:
        raise SweepError(f"{params_path}: {err}") from None
    variants: list[Variant] = []
    for i, combo in enumerate(combos, 1):
        overrides = {**common, **combo}
        merged = base
        for key, value in overrides.items():
            merged = deep_merge(merged, _dotted(str(key), value))
        label = ", ".join(f"{k}={_flow(v)}" for k, v in combo.items())
        try:
            parse_params(merged, f"{path}: variant {i} ({label})")
        except ParamsError as err:
            raise SweepError(str(err)) from None
        variants.append(Variant(variant_name(name, overrides), overrides))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise SweepError(f"{path}: two variants set the same params")
    swept = list(dict.fromkeys(k for c in combos for k in c))
    return Grid(name, [str(t) for t in targets], swept, variants)


# ----------------------------------------------------------------------------- one task


@dataclass(frozen=True)
class TaskSpec:
    """What a task needs to run one variant anywhere: nothing refers to the driver's disk,
    except a local DVC remote or SQLite store in the one-machine default."""

    sweep: str
    variant: Variant
    targets: list[str]
    git_url: str
    commit: str
    dvc_remote: str  # name of the DVC remote in the committed config
    dvc_remote_url: str | None  # an absolute path, set for a local remote only
    tracking_uri: str | None
    sweep_run_id: str | None
    cpus: int
    bin_dir: str  # where dvc lives: the venv of the task's Python, by default


@dataclass
class VariantResult:
    name: str
    status: str  # "done", "skipped" (pushed before) or "failed"
    overrides: dict[str, Any]
    commit: str = ""  # the experiment's commit (refs/exps/...)
    node: str = ""
    host: str = ""
    workdir: str = ""  # the node's folder the task cloned into
    seconds: float = 0.0
    run_ids: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""


def exp_ref(baseline: str, name: str) -> str:
    """The git ref DVC gives experiment ``name`` of baseline commit ``baseline``."""
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def _die_with_parent() -> Any:
    """A ``preexec_fn`` that has Linux SIGTERM the child when the task's worker dies (a
    lost node), so no orphaned ``dvc`` goes on computing (its stage dies with it: harness).
    libc is opened here, in the parent: only the prctl call runs after the fork."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    prctl, sig, zero = libc.prctl, ctypes.c_ulong(signal.SIGTERM), ctypes.c_ulong(0)
    return lambda: prctl(1, sig, zero, zero, zero)  # PR_SET_PDEATHSIG = 1


def _sh(cmd: Sequence[str], cwd: Path | str, env: Mapping[str, str] | None = None) -> str:
    """Run ``cmd``; its stdout, or RuntimeError with the last line it printed."""
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=env, capture_output=True, text=True, preexec_fn=_die_with_parent()
    )
    if proc.returncode != 0:
        cause = failure_cause(proc.stdout + "\n" + proc.stderr)
        raise RuntimeError(f"`{' '.join(cmd[:4])}` exited {proc.returncode}: {cause}")
    return proc.stdout


def failure_cause(output: str) -> str:
    """The line of a failed command's output that names the cause.

    A stage's own one-line error says more than DVC's "failed to reproduce"; else DVC's
    ``ERROR:`` line with the unindented lines that continue it (Hydra's "Could not override
    'models.x.lr'. ... Key 'lr' is not in struct"), not the context DVC prints after it
    (``object_type=dict``); else the last line.
    """
    lines = [ln.rstrip() for ln in output.strip().splitlines() if ln.strip()] or ["no output"]
    ours = [ln.split(" ERROR ", 1)[1] for ln in lines if " ERROR mnistlab" in ln]
    if ours:
        return ours[-1].strip()
    for i, line in enumerate(lines):
        if line.startswith("ERROR:"):
            parts = [line.removeprefix("ERROR:").strip()]
            for more in lines[i + 1 :]:
                if more.startswith((" ", "\t", "ERROR:")) or "=" in more.split(" ", 1)[0]:
                    break
                parts.append(more.strip())
            return " ".join(parts)
    return lines[-1].strip()


def remote_exp_commits(git_url: str, baseline: str, cwd: Path | str = ".") -> dict[str, str]:
    """``{experiment name: commit}`` of the experiments of ``baseline`` on ``git_url``."""
    prefix = exp_ref(baseline, "")
    out = _sh(["git", "ls-remote", git_url, f"{prefix}*"], cwd=cwd)
    refs = (line.split("\t") for line in out.splitlines() if "\t" in line)
    return {ref.removeprefix(prefix): sha for sha, ref in refs if ref.startswith(prefix)}


def headline(repo: Path, rev: str) -> dict[str, float]:
    """The headline numbers (training minutes, test accuracy, PGD/strong/standard-budget
    robust accuracy) in ``rev``'s metrics, as the pipeline parent run shows them
    (harness.tracking.headline_metrics)."""
    from mnistlab.harness.tracking import headline_metrics

    files = _sh(["git", "ls-tree", "-r", "--name-only", rev, "metrics/"], cwd=repo).split()
    out: dict[str, float] = {}
    for f in files:
        parts = Path(f).with_suffix("").parts  # metrics/<kind>/<item>.json
        if len(parts) != 3 or parts[1] not in ("train", "evaluate", "attack"):
            continue
        data = json.loads(_sh(["git", "show", f"{rev}:{f}"], cwd=repo))
        out.update(headline_metrics(f"{parts[1]}@{parts[2]}", data))
    return dict(sorted(out.items()))


def run_variant(spec: TaskSpec) -> VariantResult:
    """Run one variant in a fresh clone and push it; returns what it did.

    Idempotent: an experiment of this name already on the git remote (a retry after the
    node died past its push, or a rerun of the sweep) is read back, not run again.
    """
    t0 = time.monotonic()
    v = spec.variant
    node = _node_id()
    base = Path(os.environ.get("MNISTLAB_SWEEP_WORKDIR") or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"sweep-{v.name}-", dir=base))
    env = {
        **os.environ,
        "PATH": f"{spec.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": str(spec.cpus),  # threads: auto uses what this task was given
        "DVC_NO_ANALYTICS": "1",
    }
    for key in ("DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME", SWEEP_RUN_ENV):
        env.pop(key, None)
    if spec.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = spec.tracking_uri
    if spec.sweep_run_id:
        env[SWEEP_RUN_ENV] = spec.sweep_run_id
    repo = work / "repo"
    # the stages import the clone's own science code (src/), not whatever is installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo / "src"), env.get("PYTHONPATH")]))
    result = VariantResult(
        v.name, "done", v.overrides, node=node, host=socket.gethostname(), workdir=str(base)
    )
    try:
        _sh(["git", "clone", "-q", "--no-checkout", spec.git_url, str(repo)], cwd=work, env=env)
        _sh(["git", "checkout", "-q", "--detach", spec.commit], cwd=repo, env=env)
        if spec.dvc_remote_url:  # the one-machine default: the driver's local remote folder
            dvc = ["dvc", "remote", "modify", "--local", spec.dvc_remote, "url"]
            _sh([*dvc, spec.dvc_remote_url], cwd=repo, env=env)
        pushed = remote_exp_commits(spec.git_url, spec.commit, repo).get(v.name)
        if pushed:
            result.status = "skipped"
        else:
            cmd = ["dvc", "exp", "run", "-n", v.name, *v.set_args(), "--pull", "--allow-missing"]
            _sh([*cmd, *spec.targets], cwd=repo, env=env)
            push = ["dvc", "exp", "push", "--run-cache", "-r", spec.dvc_remote, spec.git_url]
            _sh([*push, v.name], cwd=repo, env=env)
            pushed = remote_exp_commits(spec.git_url, spec.commit, repo)[v.name]
        _sh(["git", "fetch", "-q", spec.git_url, exp_ref(spec.commit, v.name)], cwd=repo, env=env)
        result.commit = pushed
        result.metrics = headline(repo, pushed)
        result.run_ids = _variant_run_ids(spec.tracking_uri, v.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.seconds = round(time.monotonic() - t0, 1)
    return result


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # not under Ray (a direct call)
        return socket.gethostname()


def _variant_run_ids(uri: str | None, name: str) -> list[str]:
    """Ids of the MLflow runs (pipeline parent first, then stages) tagged with ``name``."""
    if not uri:
        return []
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], f"tags.dvc_exp_name = '{name}'")
    runs = sorted(runs, key=lambda r: (r.data.tags.get("run_kind") != "pipeline", r.info.run_name))
    return [r.info.run_id for r in runs]


# ----------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class Place:
    """Where the sweep's code, data and runs live."""

    root: Path
    commit: str
    git_url: str
    dvc_remote: str
    dvc_remote_url: str | None  # absolute path of a local DVC remote, else None
    tracking_uri: str | None


def _git(root: Path, *args: str) -> str:
    return _sh(["git", *args], cwd=root).strip()


def locate(root: Path, git_remote: str | None, dvc_remote: str | None) -> Place:
    """Check that the sweep can start from ``root`` and say where everything lives.

    Raises:
        SweepError: a dirty tree, an unknown remote, or a commit the git remote lacks.
    """
    if dirty := _sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root):
        first = dirty.splitlines()[0][3:]  # "XY path"
        raise SweepError(
            f"uncommitted changes ({first} ...): commit and push them, a sweep runs a commit"
        )
    commit = _git(root, "rev-parse", "HEAD")
    if git_remote:
        try:
            git_url = _git(root, "remote", "get-url", git_remote)
            _git(root, "fetch", "-q", git_remote)
        except RuntimeError as err:
            raise SweepError(f"git remote {git_remote!r}: {err}") from None
        holders = _git(root, "for-each-ref", "--contains", commit, f"refs/remotes/{git_remote}")
        if not holders:
            raise SweepError(
                f"commit {commit[:7]} is not on git remote {git_remote!r}: push it first "
                "(each task clones the remote at this commit)"
            )
        if not urlsplit(git_url).scheme and not git_url.startswith("/") and ":" not in git_url:
            git_url = str((root / git_url).resolve())
    else:
        git_url = str(root)
    from dvc.repo import Repo

    with Repo(str(root)) as repo:  # the merged config; a local path comes back absolute
        remotes = {k: v.get("url", "") for k, v in repo.config["remote"].items()}
        name = dvc_remote or repo.config["core"].get("remote", "")
    if not name:
        raise SweepError("no DVC remote: add one (`dvc remote add -d ...`) or give --dvc-remote")
    if name not in remotes:
        raise SweepError(f"DVC remote {name!r} is not configured (have: {sorted(remotes)})")
    url = remotes[name]
    local = not urlsplit(url).scheme or urlsplit(url).scheme == "file"
    local_url = str(Path(root, urlsplit(url).path).resolve()) if local else None
    uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None and os.environ.get("MNISTLAB_TRACKING", "1") != "0":
        uri = f"sqlite:///{root}/mlflow.db"
    return Place(root, commit, git_url, name, local_url, uri)


def check_baseline(place: Place, targets: Sequence[str]) -> None:
    """Stop before Ray starts when the baseline commit's outputs exist nowhere.

    Each variant reruns what its params change and pulls the rest from the DVC remote; an
    output that ``dvc.lock`` names but that is neither in this repo's cache nor on the
    remote (a clone that has not run the pipeline, or has not pushed it) would fail every
    variant with DVC's "missing files".

    Raises:
        SweepError: one line: how many outputs are missing, one of them, what to run.
    """
    dvc = str(Path(sys.executable).parent / "dvc")
    cmd = [dvc, "status", "--cloud", "-r", place.dvc_remote, "--json", "--with-deps", *targets]
    try:
        status = json.loads(_sh(cmd, cwd=place.root) or "{}")
    except (RuntimeError, json.JSONDecodeError) as err:
        raise SweepError(f"cannot check the baseline's outputs: {err}") from None
    missing = sorted(path for path, state in status.items() if state == "missing")
    if missing:
        raise SweepError(
            f"the baseline {place.commit[:7]} is not built: {len(missing)} of its outputs "
            f"are in no cache and not on DVC remote {place.dvc_remote!r} (e.g. {missing[0]}); "
            "run `make repro` here (or `dvc pull` them), then sweep again"
        )


def sweep_run(place: Place, grid: Grid) -> str | None:
    """The sweep's MLflow run (reused by a rerun of the same sweep at the same commit)."""
    if not place.tracking_uri:
        return None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=place.tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    key = f"{grid.name}@{place.commit}"
    found = client.search_runs([exp_id], f"tags.run_kind = 'sweep' AND tags.sweep_key = '{key}'")
    if found:
        return found[0].info.run_id
    tags = {"run_kind": "sweep", "sweep_key": key, "sweep": grid.name, "git_commit": place.commit}
    run = client.create_run(exp_id, run_name=f"sweep {grid.name}", tags=tags)
    for k in grid.swept:
        values = sorted({_flow(v.overrides.get(k)) for v in grid.variants})
        client.log_param(run.info.run_id, k, ", ".join(values)[:6000])
    client.log_param(run.info.run_id, "variants", len(grid.variants))
    return run.info.run_id


def table(grid: Grid, results: Sequence[VariantResult]) -> tuple[str, str]:
    """The comparison table as (markdown, csv): a row per variant; the swept params, then
    each headline metric that differs between variants, then where and how it ran."""
    landed = [r for r in results if r.metrics]  # a failed variant has none to compare
    keys = sorted({k for r in landed for k in r.metrics})
    varying = [k for k in keys if len({r.metrics.get(k) for r in landed}) > 1] or keys
    head = ["experiment", *grid.swept, *varying, "status", "seconds", "node"]
    rows = []
    for r in results:
        cells = [r.name, *(_flow(r.overrides.get(k)) for k in grid.swept)]
        cells += [f"{r.metrics[k]:.4f}" if k in r.metrics else "" for k in varying]
        cells += [r.status + (f": {r.error}" if r.error else ""), f"{r.seconds:.0f}", r.node[:8]]
        rows.append(cells)
    md = "\n".join(
        "| " + " | ".join(c.replace("|", "/") for c in row) + " |"
        for row in [head, ["---"] * len(head), *rows]
    )
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([head, *rows])
    return md + "\n", buf.getvalue()


def _remote_task(cpus: int, retries: int) -> Any:
    import ray

    import ops.sweep

    ray.cloudpickle.register_pickle_by_value(ops.sweep)  # nodes need no copy of ops/
    return ray.remote(run_variant).options(num_cpus=cpus, max_retries=retries)


def run_sweep(
    grid: Grid,
    place: Place,
    cpus: int = 1,
    retries: int = 2,
    out_dir: Path | None = None,
    echo: Any = print,
    keep: Sequence[str] = (),
) -> list[VariantResult]:
    """Submit every variant as one Ray task (a task whose experiment the remote already
    holds reads it back instead of running it); write the table.

    Args:
        keep: other variants of the grid whose rows of the results file already written
            stay in it, first, in this order (``--only``: a variant added to a grid later
            runs alone, at its own commit, and joins the earlier ones' table).
    """
    import ray

    run_id = sweep_run(place, grid)
    if place.dvc_remote_url:  # the local stand-in remote: hand the tasks the baseline
        dvc = str(Path(sys.executable).parent / "dvc")
        _sh([dvc, "push", "-q", "--run-cache", "-r", place.dvc_remote], cwd=place.root)
    done = remote_exp_commits(place.git_url, place.commit, place.root)
    bin_dir = str(Path(sys.executable).parent)
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False)
    task = _remote_task(cpus, retries)
    pending: dict[Any, Variant] = {}
    results: dict[str, VariantResult] = {}
    for v in grid.variants:
        spec = TaskSpec(
            grid.name, v, grid.targets, place.git_url, place.commit, place.dvc_remote,
            place.dvc_remote_url, place.tracking_uri, run_id, cpus, bin_dir,
        )  # fmt: skip
        if v.name in done:
            echo(f"{v.name}: already on the git remote, read back")
        pending[task.remote(spec)] = v
    total, failed, shown = len(pending), 0, ""
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=5)
        for ref in ready:
            v = pending.pop(ref)
            try:
                results[v.name] = ray.get(ref)
            except Exception as err:  # the task's error after its retries, or a lost node
                failed += 1
                msg = _one_line(err)
                results[v.name] = VariantResult(v.name, "failed", v.overrides, error=msg)
                echo(f"{v.name}: failed: {msg}")
        line = (
            f"sweep {grid.name}: {total - len(pending) - failed}/{total} done, "
            f"{len(pending)} running or queued, {failed} failed"
        )
        if line != shown:
            echo(line)
            shown = line
    ordered = [results[v.name] for v in grid.variants]
    ok = [r.name for r in ordered if r.status != "failed"]
    if ok:  # refs and data of every experiment that landed, for `dvc exp show` here
        dvc = str(Path(sys.executable).parent / "dvc")
        pull = [dvc, "exp", "pull", "-r", place.dvc_remote, place.git_url, *ok]
        if place.git_url != str(place.root):
            _sh(pull, cwd=place.root)
    out_dir = out_dir or place.root / "sweeps" / "results"
    earlier = out_dir / f"{grid.name}.json"
    if keep and earlier.is_file():
        rows = {r["name"]: r for r in json.loads(earlier.read_text())}
        ordered = [VariantResult(**rows[k]) for k in keep if k in rows] + ordered
    md, text = table(grid, ordered)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{grid.name}.md").write_text(md)
    (out_dir / f"{grid.name}.csv").write_text(text)
    (out_dir / f"{grid.name}.json").write_text(
        json.dumps([asdict(r) for r in ordered], indent=2, default=str) + "\n"
    )
    if run_id:
        _close_sweep_run(place.tracking_uri, run_id, ordered, out_dir, grid.name)
    echo(md)
    return ordered


def _close_sweep_run(
    uri: str | None, run_id: str, results: Sequence[VariantResult], out_dir: Path, name: str
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    failed = sum(r.status == "failed" for r in results)
    client.log_metric(run_id, "variants_failed", failed)
    for suffix in ("md", "csv"):
        client.log_artifact(run_id, str(out_dir / f"{name}.{suffix}"))
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    useful = [ln.strip() for ln in text if ln.strip() and not ln.startswith(("Traceback", "  "))]
    return (useful[-1] if useful else type(err).__name__)[:300]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ops.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("grid", help="a grid file, e.g. sweeps/lr.yaml")
    ap.add_argument("--git-remote", help="a git remote name (default: this repo, one machine)")
    ap.add_argument("--dvc-remote", help="a DVC remote name (default: the default remote)")
    ap.add_argument("--cpus-per-task", type=int, default=1)
    ap.add_argument("--retries", type=int, default=2, help="retries after a lost node or worker")
    ap.add_argument("--first", type=int, help="run only the grid's first N variants (a check)")
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these variants; the results file keeps the others' rows",
    )
    args = ap.parse_args(argv)
    root = Path(_sh(["git", "rev-parse", "--show-toplevel"], cwd=Path.cwd()).strip())
    keep: list[str] = []
    try:
        grid = load_grid(args.grid, root / "params.yaml")
        if args.first:
            grid = replace(grid, variants=grid.variants[: args.first])
        if args.only:
            names = [v.name for v in grid.variants]
            unknown = [n for n in args.only if n not in names]
            if unknown:
                raise SweepError(
                    f"{args.grid}: no variant {unknown[0]} (it has {', '.join(names)})"
                )
            keep = [n for n in names if n not in args.only]
            grid = replace(grid, variants=[v for v in grid.variants if v.name in args.only])
        place = locate(root, args.git_remote, args.dvc_remote)
        check_baseline(place, grid.targets)
    except (SweepError, RuntimeError) as err:
        print(f"sweep: {err}", file=sys.stderr)
        return EXIT_USAGE
    where = os.environ.get("RAY_ADDRESS") or "an embedded Ray on this machine"
    print(f"sweep {grid.name}: {len(grid.variants)} variants of {place.commit[:7]} on {where}")
    try:
        results = run_sweep(grid, place, args.cpus_per_task, args.retries, keep=keep)
    except KeyboardInterrupt:
        print(
            f"sweep {grid.name}: interrupted; the variants already pushed stay on the remote "
            "(the same command reads them back)",
            file=sys.stderr,
        )
        return 130
    return EXIT_FAILED if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
