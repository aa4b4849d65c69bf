"""The team workflow for real: MLflow on PostgreSQL + S3 (moto), a DVC remote on S3.

Clone A (a fresh clone on the tiny params profile) builds ``evaluate@cnn`` and what it
needs against the stack's ``mlflow server`` and pushes every output to the S3 remote;
clone B (a git clone of A's history) pulls them, sees A's runs and models through the
server, queues four experiments that lose no run, and shares one with ``dvc
exp push``. Then the failure modes: the server gone mid-pipeline, PostgreSQL down at the
start, the S3 remote unreachable on ``dvc push``; and the stack leaving nothing behind
(``make server`` included). Every server listens on 127.0.0.1; nothing else is reached.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from conftest import make_scratch_repo, write_params
from helpers.queue import wait_for_queue
from helpers.team import (
    DVC,
    REPO,
    assert_stack_gone,
    cache_digests,
    client,
    digests,
    dvc_env,
    hermetic,
    kill_group_now,
    port_open,
    ran,
    run,
    server_runs,
    stack_fixture,  # noqa: F401 - the session fixture `stack`
    stage_outs,
    under,
)
from ops import team_stack as ts

# one team stack and one pair of clones for the module: one worker runs them all
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("team")]

QUEUE_TARGET = "evaluate@cnn"  # validate_params -> train@cnn -> evaluate@cnn
QUEUED = (("q-seed1", 1), ("q-seed2", 2), ("q-seed3", 3), ("q-seed4", 4))
QUEUE_SHRINK = ("train.train_limit=1000", "evaluate.test_limit=500")
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


# The stack alone first; the team's clones follow (they need no tiny build: see BUILT).
# ----------------------------------------------------------------------------- the services


def test_run_params_metrics_artifact_and_model_version(stack: ts.TeamStack, tmp_path: Path) -> None:
    """A run through the server lands in PostgreSQL, its artifact in the S3 bucket."""
    c = client(stack.tracking_uri)
    exp_id = c.create_experiment(f"team-{uuid.uuid4().hex[:8]}")
    run_ = c.create_run(exp_id, run_name="train@cnn")
    run_id = run_.info.run_id
    assert run_.info.artifact_uri.startswith("mlflow-artifacts:/"), run_.info.artifact_uri
    c.log_param(run_id, "train.lr", "0.01")
    c.log_metric(run_id, "val.accuracy", 0.97, step=1)
    notes = tmp_path / "notes.txt"
    notes.write_text("artifact through the proxy\n")
    c.log_artifact(run_id, str(notes), artifact_path="docs")
    c.set_terminated(run_id)

    s3 = ts.s3_client(stack.s3_endpoint)
    key = f"mlartifacts/{exp_id}/{run_id}/artifacts/docs/notes.txt"
    body = s3.get_object(Bucket=ts.ARTIFACTS_BUCKET, Key=key)["Body"].read()
    assert body == notes.read_bytes()

    pg = stack.services["postgres"]
    assert isinstance(pg, ts.Postgres)
    status = subprocess.run(
        [str(ts.pg_bindir() / "psql"), pg.dsn, "-tAc"]
        + [f"select status from runs where run_uuid = '{run_id}'"],
        capture_output=True,
        text=True,
        timeout=30,
        env=ts.child_env(),
        check=True,
    ).stdout.strip()
    assert status == "FINISHED"

    name = f"mnist-team-{uuid.uuid4().hex[:6]}"
    c.create_registered_model(name)
    mv = c.create_model_version(name, source=f"{run_.info.artifact_uri}/docs", run_id=run_id)
    assert mv.version == "1" and c.get_model_version(name, "1").run_id == run_id


def test_second_server_shares_backend_and_a_stopped_one_fails_fast(
    stack: ts.TeamStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    first = client(stack.tracking_uri)
    exp_id = first.create_experiment(f"shared-{uuid.uuid4().hex[:8]}")
    with ts.MlflowServer(stack.backend_uri, stack.artifacts_destination, stack.env) as server:
        second = client(server.url)
        assert second.get_experiment(exp_id).name.startswith("shared-")
        pids = server.pids()
        server.stop_server_only()
        assert pids and ts.alive(pids) == [] and not port_open(server.url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        with pytest.raises(MlflowException, match="127.0.0.1") as err:
            second.get_experiment(exp_id)
        # fast: refused on the first try, no retry and no timeout waited out
        assert "Connection refused" in str(err.value)
    assert first.get_experiment(exp_id).experiment_id == exp_id  # the stack's is unaffected


# ----------------------------------------------------------------------------- cleanup
# The session's stack ends with an exception thrown into it and checks that nothing is left
# (helpers.team.stack_fixture); so do the single services the failure tests start and stop.


@pytest.mark.parametrize("start", [ts.team_stack, ts.Postgres, ts.S3Server])
def test_refuses_a_non_empty_directory(tmp_path: Path, start: Any) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="absent or an empty directory"):
        with start(tmp_path):
            pass
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_make_server_prints_exports_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`make server`: the lines to export work as they are; Ctrl-C leaves nothing behind."""
    root = tmp_path / "served"
    venv = Path(sys.executable).parent.parent
    # -o: take setup (the venv) and postgres (the apt package) as done; never rebuild here
    cmd = ["make", "--no-print-directory", "-o", "setup", "-o", "postgres", "server"]
    proc = subprocess.Popen(
        [*cmd, f"SERVER_DIR={root}", f"VENV={venv}"],
        cwd=REPO,
        env=hermetic(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("dvc remote modify"):
                break
        text = "".join(lines)
        exports = dict(
            ln.removeprefix("export ").split("=", 1)
            for ln in text.splitlines()
            if ln.startswith("export ")
        )
        assert set(exports) == set(ts.CLIENT_EXPORTS), text
        uri, endpoint = exports["MLFLOW_TRACKING_URI"], exports["MLFLOW_S3_ENDPOINT_URL"]
        assert f"dvc remote add -d team s3://{ts.DVC_BUCKET}/dvc\n" in text
        assert f"dvc remote modify team endpointurl {endpoint}\n" in text
        pg_port = re.search(r"postgres up on 127\.0\.0\.1:(\d+)", text)
        assert pg_port, text
        urls = [uri, endpoint, f"http://127.0.0.1:{pg_port.group(1)}"]
        assert all(port_open(u) for u in urls)
        # a client configured by the printed lines alone reaches the server
        code = "import mlflow; print(mlflow.MlflowClient().search_experiments()[0].name)"
        env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path), **exports}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.stdout.strip() == "Default", out.stderr[-2000:]
        pids = ts.descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground job
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # the stack stopped cleanly; make itself then re-raises the SIGINT, as after any Ctrl-C
    assert "team stack stopped" in rest and "Traceback" not in rest, rest[-2000:]
    assert proc.returncode in (0, -signal.SIGINT), rest[-2000:]
    fallback = re.findall(r"using (/\S+team-pg-\w+)", text)
    assert_stack_gone(pids, [root, *map(Path, fallback)], urls)


# ----------------------------------------------------------------------------- the team


@dataclass
class Team:
    """Two clones of the project sharing a git remote, the S3 remote and the server."""

    stack: ts.TeamStack
    origin: Path  # a bare git repository both clones push to and pull from
    a: Path
    b: Path
    a_ran: list[str]  # stages A's `dvc repro` executed
    remote_prefix: str  # s3://dvc/<remote_prefix> is the DVC remote
    env: dict[str, str]  # client env: server URI + S3 credentials (no endpoint override)


def _add_team_remote(repo: Path, stack: ts.TeamStack, prefix: str) -> None:
    for cmd in stack.dvc_remote_commands(url=f"s3://{ts.DVC_BUCKET}/{prefix}"):
        run([DVC, *cmd[1:]], cwd=repo)


# What A builds against the server: the part of the study the team tests use, from
# scratch (validate_params, download, train@cnn registering its model there, evaluate@cnn),
# so the team's chain starts at once instead of after the session's tiny build.
BUILT = [QUEUE_TARGET, "--with-deps"]


@pytest.fixture(scope="module")
def team(
    stack: ts.TeamStack, tmp_path_factory: pytest.TempPathFactory, mnist_raw: Path
) -> Iterator[Team]:
    """A: a fresh clone of the project (conftest's TINY profile) with the team remote,
    ``dvc repro evaluate@cnn`` against the server, `dvc push`, `git push`.
    B: `git clone`, `dvc pull`. Both removed afterwards (they hold caches)."""
    root = tmp_path_factory.mktemp("team-repos")
    prefix = f"dvc-{uuid.uuid4().hex[:8]}"
    env = dvc_env(stack)
    try:
        origin = root / "origin.git"
        run(["git", "init", "-q", "--bare", str(origin)], cwd=root)
        a = make_scratch_repo(root / "a", mnist_raw)
        # nothing built yet: the project's dvc.lock (the full-size study's) names outputs
        # that no cache here holds; A's lock will hold what A builds
        (a / "dvc.lock").unlink()
        run([DVC, "config", "core.analytics", "false"], cwd=a)
        _add_team_remote(a, stack, prefix)  # committed: every clone gets the team remote
        run(["git", "add", "-A"], cwd=a)
        run([*GIT, "commit", "-qm", "team remote, tiny profile"], cwd=a)

        t0 = time.monotonic()
        out = run([DVC, "repro", QUEUE_TARGET], cwd=a, env=env, timeout=3600).stdout
        assert ran(out) == ["validate_params", "download", "train@cnn", QUEUE_TARGET], out
        print(f"A: dvc repro against the server: {time.monotonic() - t0:.0f} s")
        run(["git", "add", "-A"], cwd=a)
        run([*GIT, "commit", "-qm", "repro"], cwd=a)
        t0 = time.monotonic()
        run([DVC, "push", *BUILT], cwd=a, env=env)
        print(f"A: dvc push: {time.monotonic() - t0:.0f} s")
        run(["git", "remote", "add", "origin", str(origin)], cwd=a)
        run(["git", "push", "-q", "origin", "HEAD:refs/heads/main"], cwd=a)

        b = root / "b" / "repo"
        run(["git", "clone", "-q", "-b", "main", str(origin), str(b)], cwd=root)
        t0 = time.monotonic()
        run([DVC, "pull", *BUILT], cwd=b, env=env)
        print(f"B: dvc pull: {time.monotonic() - t0:.0f} s")
        yield Team(stack, origin, a, b, ran(out), prefix, env)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_b_pulls_what_a_pushed_and_is_up_to_date(team: Team) -> None:
    a, b = team.a, team.b
    status = run([DVC, "status", "--json", *BUILT], cwd=b, env=team.env).stdout
    assert json.loads(status or "{}") == {}
    cloud = run([DVC, "status", "-c", "--json", *BUILT], cwd=b, env=team.env).stdout
    assert json.loads(cloud or "{}") == {}
    assert digests(b) == digests(a)  # every output, byte for byte (data, models, figures, ...)
    assert (b / "models" / "cnn.pt").is_file()
    assert any((b / "plots" / "evaluate" / "cnn").rglob("*.png"))  # a folder output too

    # The objects really are in the bucket, under the remote's prefix.
    s3 = ts.s3_client(team.stack.s3_endpoint)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=ts.DVC_BUCKET, Prefix=f"{team.remote_prefix}/"
        )
        for o in page.get("Contents", [])
    ]
    # B's cache holds exactly what A pushed. (A's cache also holds the `cache: false`
    # metrics and CSVs, which DVC keeps for its run cache and git carries.)
    pulled = cache_digests(b)
    assert {k.removeprefix(f"{team.remote_prefix}/") for k in keys} == set(pulled)
    print(f"S3 remote: {len(keys)} objects = B's cache; B: {len(digests(b))} output files = A's")


def test_b_sees_a_runs_and_models_through_the_server(team: Team) -> None:
    runs = server_runs(team.stack.tracking_uri)
    commit = run(["git", "rev-parse", "HEAD~1"], cwd=team.a).stdout.strip()
    from_a = [r for r in runs if r.data.tags.get("git_commit") == commit]
    stage_runs = [r for r in from_a if "stage" in r.data.tags]  # not a parent run
    names = sorted(r.info.run_name for r in stage_runs)
    assert names == sorted(set(team.a_ran) - {"validate_params"})  # one run per executed stage
    assert all(r.info.status == "FINISHED" for r in stage_runs)
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:/") for r in stage_runs)

    c = client(team.stack.tracking_uri)
    by_id = {r.info.run_id: r for r in stage_runs}
    model = QUEUE_TARGET.split("@")[1]
    # A registered one version of the model it trained (later tests may add more)
    (version,) = [v for v in c.search_model_versions(f"name='mnist-{model}'") if v.run_id in by_id]
    assert by_id[version.run_id].info.run_name == f"train@{model}"

    # The model went through the server into the S3 bucket, and B loads it from the
    # registry with nothing but the client env: it classifies as A's evaluate stage did.
    s3 = ts.s3_client(team.stack.s3_endpoint)
    listed = s3.list_objects_v2(Bucket=ts.ARTIFACTS_BUCKET, Prefix="mlartifacts/")
    assert listed.get("KeyCount", 0) > 0
    code = (
        "import json, sys, numpy as np, mlflow\n"
        "from mnistlab.core import mnist\n"
        "x, y = mnist.load_mnist('data/MNIST/raw', 'test')\n"
        "x = (x[:1000].unsqueeze(1).float() / 255).numpy()\n"
        f"m = mlflow.pyfunc.load_model('models:/mnist-{model}/{version.version}')\n"
        "p = np.asarray(m.predict(x)).argmax(1)\n"
        "print(json.dumps(float((p == y[:1000].numpy()).mean())))\n"
    )
    out = run([sys.executable, "-c", code], cwd=team.b, env=team.env, timeout=600).stdout
    acc = json.loads(out.strip().splitlines()[-1])
    ev = json.loads((team.b / "metrics" / "evaluate" / f"{model}.json").read_text())
    assert ev["n_test"] == 1000 and acc == pytest.approx(ev["test_accuracy"], abs=1e-9)
    print(f"server: {len(stage_runs)} stage runs of A's repro; v{version.version}; acc {acc}")


# ----------------------------------------------------------------------------- experiments


@dataclass
class Queued:
    status: str
    logs: dict[str, str]
    seconds: float


@pytest.fixture(scope="module")
def queued(team: Team) -> Queued:
    """Four experiments queued in B and run two at a time against the server."""
    b = team.b
    for name, seed in QUEUED:
        sets = [arg for s in (f"seed={seed}", *QUEUE_SHRINK) for arg in ("-S", s)]
        cmd = [DVC, "exp", "run", QUEUE_TARGET, "--queue", "-n", name, *sets]
        run(cmd, cwd=b, env=team.env)
    t0 = time.monotonic()
    try:
        # The workers inherit `dvc queue start`'s stdout: do not capture it, or we wait on them.
        subprocess.run(
            [DVC, "queue", "start", "-j", "2"],
            cwd=b,
            env=hermetic(team.env),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=300,
        )
        status = wait_for_queue(b, [n for n, _ in QUEUED], partial(run, env=team.env))
        seconds = time.monotonic() - t0
    finally:
        # let idle workers go; kill what still runs if we gave up waiting or failed
        run([DVC, "queue", "stop", "--kill"], cwd=b, env=team.env, check=False)
    logs = {n: run([DVC, "queue", "logs", n], cwd=b, check=False).stdout for n, _ in QUEUED}
    print(f"4 queued experiments, 2 workers: {seconds:.0f} s")
    return Queued(status, logs, seconds)


def test_four_queued_experiments_lose_no_run(team: Team, queued: Queued) -> None:
    assert "Failed" not in queued.status, queued.status + "".join(queued.logs.values())[-4000:]
    assert queued.status.count("Success") == len(QUEUED), queued.status
    runs = server_runs(team.stack.tracking_uri)
    by_exp: dict[str, list[Any]] = {}
    for r in runs:
        by_exp.setdefault(r.data.tags.get("dvc_exp_name", ""), []).append(r)
    counts = {}
    parents: dict[str, set[str]] = {}
    for name, seed in QUEUED:
        executed = set(ran(queued.logs[name])) - {"validate_params"}
        assert {"train@cnn", "evaluate@cnn"} <= executed, queued.logs[name][-3000:]
        got = by_exp.get(name, [])
        stage_runs = [r for r in got if "stage" in r.data.tags]
        names = [r.info.run_name for r in stage_runs]
        # exactly one run per stage DVC executed in this experiment: none lost, none doubled
        assert sorted(names) == sorted(executed), (name, names, executed)
        assert all(r.info.status == "FINISHED" for r in got)
        assert {r.data.params["seed"] for r in stage_runs if "seed" in r.data.params} == {str(seed)}
        counts[name] = len(stage_runs)
        # one parent run per queued experiment (harness.tracking): named after it, holding
        # every stage run of it
        parents[name] = {r.data.tags.get("mlflow.parentRunId", "") for r in stage_runs}
        assert len(parents[name]) == 1 and "" not in parents[name], (name, parents[name])
    ids = [next(iter(p)) for p in parents.values()]
    assert len(set(ids)) == len(ids), parents  # no parent shared between two experiments
    c = client(team.stack.tracking_uri)
    for name, run_id in zip(parents, ids, strict=True):
        parent = c.get_run(run_id)
        assert parent.info.run_name == name and parent.info.status == "FINISHED"
        assert parent.data.tags.get("run_kind") == "pipeline"
    print(f"stage runs per experiment: {counts}; parent runs: {ids}")


def test_an_experiment_is_shared_with_exp_push_and_pull(team: Team, queued: Queued) -> None:
    name = QUEUED[0][0]
    assert "Success" in queued.status
    run([DVC, "exp", "push", "origin", name], cwd=team.b, env=team.env)
    assert name in run([DVC, "exp", "list", "origin", "--name-only"], cwd=team.a).stdout
    run([DVC, "exp", "pull", "origin", name], cwd=team.a, env=team.env)
    shown = run([DVC, "exp", "show", "--json"], cwd=team.a).stdout
    assert name in shown
    # A gets B's experiment with its data from the S3 remote (`exp pull` fetched it): its
    # commit from git, its outputs from the cache, nothing to fetch or run. (`dvc exp apply`
    # would check out every stage's outputs, and A built only `evaluate@cnn` and its deps.)
    ref = run(["git", "rev-parse", f"refs/exps/{_exp_ref(team.b, name)}"], cwd=team.b).stdout
    pulled = run(["git", "rev-parse", f"refs/exps/{_exp_ref(team.a, name)}"], cwd=team.a).stdout
    assert pulled == ref
    run(["git", "checkout", ref.strip(), "--", "."], cwd=team.a)
    run([DVC, "checkout", *BUILT], cwd=team.a)
    status = run([DVC, "status", "--json", *BUILT], cwd=team.a).stdout
    assert json.loads(status or "{}") == {}
    mine = json.loads((team.a / "metrics/evaluate/cnn.json").read_text())
    theirs = json.loads(
        run(["git", "show", f"{ref.strip()}:metrics/evaluate/cnn.json"], cwd=team.b).stdout
    )
    assert mine == theirs and mine["n_test"] == 500


def _exp_ref(repo: Path, name: str) -> str:
    """``xx/yyyy.../name`` under refs/exps for experiment ``name``."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=repo).stdout
    (ref,) = [r for r in refs.split() if r.endswith(f"/{name}")]
    return ref.removeprefix("refs/exps/")


# ----------------------------------------------------------------------------- a sweep on Ray

SWEEP = {
    "name": "tsweep",
    "targets": [QUEUE_TARGET],
    "grid": {"seed": [21, 22]},
    "set": {k: yaml.safe_load(v) for k, v in (s.split("=") for s in QUEUE_SHRINK)},
}


def _busy_clone(node: Any) -> str | None:
    """The variant a node's task is training, once its stage runs: from the clone folder
    (``sweep-<variant>-*``) of the process running a stage under that node."""
    for pid in node.pids():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if "stages" in proc.cmdline() and "train" in proc.cmdline():
                clone = Path(proc.cwd()).relative_to(node.workdir).parts[0]
                return clone.removeprefix("sweep-").rsplit("-", 1)[0]
    return None


def test_sweep_on_a_ray_cluster_survives_a_lost_node(team: Team, tmp_path: Path) -> None:
    """Two variants from clone B on a real Ray cluster (a head and three single-CPU worker
    nodes, separate `ray start` processes with their own folders), against the team's git
    remote, S3 remote and MLflow server. One worker node is SIGKILLed while it trains: its
    variant is retried on another node; nothing is lost and no ref doubled."""
    from ops import sweep
    from ops.ray_cluster import local_cluster

    b = team.b
    grid_file = b / "sweeps" / "tsweep.yaml"
    grid_file.parent.mkdir(exist_ok=True)
    grid_file.write_text(yaml.safe_dump(SWEEP, sort_keys=False))  # untracked: tree stays clean
    grid = sweep.load_grid(grid_file, b / "params.yaml")
    names = sorted(v.name for v in grid.variants)
    baseline = run(["git", "rev-parse", "HEAD"], cwd=b).stdout.strip()
    origin = str(team.origin)
    with local_cluster(workers=3, env=hermetic(team.env)) as cluster:
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = hermetic({**team.env, **cluster.client_env, "PYTHONPATH": path})
        cmd = [sys.executable, "-m", "ops.sweep", str(grid_file), "--git-remote", "origin"]
        t0 = time.monotonic()
        with open(tmp_path / "sweep.out", "w") as out:
            driver = subprocess.Popen(cmd, cwd=b, env=env, stdout=out, stderr=subprocess.STDOUT)
            killed, victim = None, cluster.workers[0]
            # the first node seen training a variant is the one that goes
            while killed is None and driver.poll() is None and time.monotonic() - t0 < 900:
                for victim in cluster.workers:
                    if killed := _busy_clone(victim):
                        break
                else:
                    time.sleep(0.5)
            assert killed in names, (tmp_path / "sweep.out").read_text()[-3000:]
            cluster.kill(victim)  # the machine is gone, mid-training
            assert victim.pids() == []
            driver.wait(timeout=1800)
        seconds = time.monotonic() - t0
        log = (tmp_path / "sweep.out").read_text()
        assert driver.returncode == 0, log[-4000:]
    assert f"sweep tsweep: {len(names)}/{len(names)} done, 0 running or queued, 0 failed" in log

    # git: exactly one ref per variant on the team's remote, none doubled (the remote also
    # holds the experiment an earlier test pushed from B's baseline)
    on_remote = sweep.remote_exp_commits(origin, baseline, b)
    refs = {n: sha for n, sha in on_remote.items() if n.startswith("tsweep-")}
    assert sorted(refs) == names
    listed = run(["git", "ls-remote", origin, "refs/exps/*"], cwd=b).stdout.split()
    assert len([r for r in listed if r.endswith(tuple(f"/{n}" for n in names))]) == len(names)
    # the driver pulled them: `dvc exp show` in B lists them all
    shown = run([DVC, "exp", "show", "--csv"], cwd=b, env=team.env).stdout
    assert all(n in shown for n in names)

    results = {r["name"]: r for r in json.loads((b / "sweeps/results/tsweep.json").read_text())}
    assert {r["status"] for r in results.values()} == {"done"}
    assert len({r["node"] for r in results.values()}) >= 2  # ran on more than one node
    assert results[killed]["workdir"] != str(victim.workdir)  # retried elsewhere

    # S3: each experiment's model is in the team's DVC remote
    s3 = ts.s3_client(team.stack.s3_endpoint)
    for name, sha in refs.items():
        lock = yaml.safe_load(run(["git", "show", f"{sha}:dvc.lock"], cwd=b).stdout)
        (out,) = [o for o in lock["stages"]["train@cnn"]["outs"] if o["path"] == "models/cnn.pt"]
        key = f"{team.remote_prefix}/files/md5/{out['md5'][:2]}/{out['md5'][2:]}"
        assert s3.head_object(Bucket=ts.DVC_BUCKET, Key=key)["ContentLength"] > 0, name
        metrics = json.loads(run(["git", "show", f"{sha}:metrics/evaluate/cnn.json"], cwd=b).stdout)
        assert results[name]["metrics"]["test_accuracy.cnn"] == metrics["test_accuracy"]

    # MLflow on the server: the sweep's run holds one finished pipeline run per variant,
    # each holding its finished train and evaluate runs (the killed attempt's runs stay
    # apart, never FINISHED)
    runs = server_runs(team.stack.tracking_uri)
    (top,) = [r for r in runs if r.data.tags.get("sweep") == "tsweep"]
    for name in names:
        mine = [r for r in runs if r.data.tags.get("dvc_exp_name") == name]
        done = [r for r in mine if r.info.status == "FINISHED"]
        (parent,) = [r for r in done if r.data.tags.get("run_kind") == "pipeline"]
        assert parent.data.tags["mlflow.parentRunId"] == top.info.run_id
        stages = [r for r in done if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.info.run_name for r in stages) == ["evaluate@cnn", "train@cnn"], name
        assert parent.info.run_id in results[name]["run_ids"]
    print(f"sweep of {len(names)} on 3 nodes, one killed ({killed}): {seconds:.0f} s")


# ----------------------------------------------------------------------------- failure modes


def _change_model_lr(repo: Path, lr: float) -> None:
    """Make `train@cnn` (and what follows it) out of date; a new ``lr`` per test, or DVC's
    run cache would restore `train@cnn` instead of running it."""
    write_params(repo, {"models": {"cnn": {"lr": lr}}})


def _restore(repo: Path, env: dict[str, str]) -> None:
    """Back to the committed state: git for params/lock/metrics, DVC for cached outputs."""
    run(["git", "checkout", "--", "."], cwd=repo)
    run([DVC, "checkout", "--force", *BUILT], cwd=repo, env=env)


def _stage_error_lines(stderr: str) -> list[str]:
    """The stage's own ERROR lines (not DVC's ``ERROR: failed to reproduce``)."""
    return [ln for ln in stderr.splitlines() if re.search(r" ERROR mnistlab[.\w]*: ", ln)]


def _check_untouched(
    repo: Path, before: dict[str, str], ran_stages: list[str], failed: str
) -> list[str]:
    """Every output file is as before, except those of stages that completed; the failed
    stage wrote nothing (DVC itself removes a stage's outputs before running it).

    Returns:
        The failed stage's files that DVC removed.
    """
    after = digests(repo)
    rewritten = [o for s in ran_stages for o in stage_outs(repo, s)]
    failed_outs = stage_outs(repo, failed)
    removed = []
    for path in sorted(set(before) | set(after)):
        if under(path, rewritten):
            continue
        if under(path, failed_outs):
            assert after.get(path, before.get(path)) == before.get(path), path
            if path not in after:
                removed.append(path)
            continue
        assert after.get(path) == before.get(path), f"{path} changed"
    return removed


def test_server_down_mid_pipeline(team: Team, tmp_path: Path) -> None:
    """The server crashes while `dvc repro` runs: the next stage fails fast with one line
    naming the URI; no output is half-written; `git checkout` + `dvc checkout` restore all."""
    repo, stack = team.b, team.stack
    before = digests(repo)
    _change_model_lr(repo, 0.0031)
    with ts.MlflowServer(
        stack.backend_uri, stack.artifacts_destination, stack.env, log_dir=tmp_path / "ml"
    ) as server:
        assert server.proc is not None
        log_path = tmp_path / "repro.out"
        env = hermetic(dvc_env(stack, server.url))
        with open(log_path, "w") as out:
            proc = subprocess.Popen(
                [DVC, "repro", "evaluate@cnn"],
                cwd=repo,
                env=env,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
            )
        try:
            deadline = time.monotonic() + 900
            # DVC prints this just before it starts the stage's command
            while "Running stage 'evaluate@cnn'" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline
                time.sleep(0.1)
            kill_group_now(server.proc)  # a crash: no graceful shutdown
            t_down = time.monotonic()
            stderr = proc.communicate(timeout=300)[1]
            fail_s = time.monotonic() - t_down
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stdout = log_path.read_text()
    assert proc.returncode != 0
    assert ran(stdout) == ["validate_params", "train@cnn", "evaluate@cnn"], stdout[-3000:]
    (line,) = _stage_error_lines(stderr)
    assert f"MLflow tracking store {server.url} is unreachable" in line, stderr[-3000:]
    assert "Traceback" not in stderr
    # fast: the first request was refused and not retried (harness.tracking_store sets no
    # retries), not a wait for a timeout; a time bound would flake on a loaded machine
    assert "Connection refused" in line, line
    removed = _check_untouched(repo, before, ["validate_params", "train@cnn"], "evaluate@cnn")
    _restore(repo, team.env)
    assert digests(repo) == before
    print(f"server down: failed {fail_s:.1f} s after the crash: {line.split(' ERROR ')[1]}")
    print(f"  DVC had removed evaluate@cnn's outputs before the command: {removed}")


def test_postgres_down_at_start(
    team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's database is down when `dvc repro` starts: the first tracked stage fails
    fast naming the URI, outputs untouched; a fresh server start fails fast too."""
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # this process's own client
    repo, stack = team.b, team.stack
    before = digests(repo)
    _change_model_lr(repo, 0.0037)
    with ts.Postgres(tmp_path / "pg") as pg:
        with ts.MlflowServer(
            pg.url, stack.artifacts_destination, stack.env, log_dir=tmp_path / "ml"
        ) as server:
            client(server.url).search_experiments()  # up and answering
            server_pids, pg_pids = server.pids(), pg.pids()
            pg_dirs = [d for d in (pg.tmp_dir, pg.cluster_dir) if d is not None]
            pg.stop_server_only()
            assert ts.alive(pg_pids) == []
            t0 = time.monotonic()
            proc = run(
                [DVC, "repro", "evaluate@cnn"],
                cwd=repo,
                env=dvc_env(stack, server.url),
                check=False,
                timeout=900,
            )
            assert proc.returncode != 0
            assert ran(proc.stdout) == ["validate_params", "train@cnn"], proc.stdout[-3000:]
            (line,) = _stage_error_lines(proc.stderr)
            assert f"MLflow tracking store {server.url} is unreachable" in line, line
            assert "503" in line and "Traceback" not in proc.stderr
            repro_s = time.monotonic() - t0
            # the cause is in the server's log only (its /health stays 200 without a DB)
            server_log = server.log_path.read_text()
            assert "OperationalError" in server_log and "Connection refused" in server_log
            with pytest.raises(MlflowException, match="503"):
                client(server.url).search_experiments()
        # a live server stopped by leaving its block leaves nothing behind
        assert_stack_gone(server_pids, [], [server.url])
        removed = _check_untouched(repo, before, ["validate_params"], "train@cnn")

        # A fresh server on the dead database fails at once, naming the database and why.
        fresh = ts.MlflowServer(pg.url, stack.artifacts_destination, stack.env)
        t0 = time.monotonic()
        with pytest.raises(ts.ServiceError) as err:
            fresh.start()
        start_s = time.monotonic() - t0
        assert f"cannot reach its backend store {pg.url}" in str(err.value)
        assert "Connection refused" in str(err.value)
        # at once: from the server's log while it was starting (the message above), not
        # from the start-up deadline running out
        assert fresh.proc is not None and fresh.proc.poll() is not None
        assert ts.alive(fresh.pids()) == [] and fresh.log_dir and not fresh.log_dir.exists()
    assert_stack_gone(pg_pids, pg_dirs, [pg.dsn])  # nor does a cluster left by its block
    _restore(repo, team.env)
    assert digests(repo) == before
    print(f"postgres down: dvc repro failed after {repro_s:.0f} s (train@cnn at start)")
    print(f"  {line.split(' ERROR ')[1]}")
    print(f"  DVC had removed train@cnn's outputs before the command: {removed}")
    print(f"  fresh server start failed in {start_s:.1f} s: {str(err.value)[:160]}")


def test_dvc_push_to_unreachable_s3_loses_nothing(team: Team, tmp_path: Path) -> None:
    """A DVC remote whose endpoint is down: DVC's own error, the cache keeps every file."""
    repo = team.b
    with ts.S3Server(tmp_path / "s3") as dead:
        pids = dead.pids()
        dead.stop_server_only()
        assert ts.alive(pids) == [] and not port_open(dead.url)
        run([DVC, "remote", "add", "dead", f"s3://{ts.DVC_BUCKET}/dead"], cwd=repo)
        run([DVC, "remote", "modify", "dead", "endpointurl", dead.url], cwd=repo)
        try:
            cache = cache_digests(repo)
            outputs = digests(repo)
            t0 = time.monotonic()
            proc = run(
                [DVC, "push", "-r", "dead", *BUILT],
                cwd=repo,
                env=team.env,
                check=False,
                timeout=600,
            )
            push_s = time.monotonic() - t0
        finally:
            run([DVC, "remote", "remove", "dead"], cwd=repo)
    assert proc.returncode != 0
    assert proc.stderr.startswith("ERROR:"), proc.stderr[-3000:]
    assert f'Could not connect to the endpoint URL: "{dead.url}/' in proc.stderr
    assert cache_digests(repo) == cache and digests(repo) == outputs
    assert json.loads(run([DVC, "status", "--json", *BUILT], cwd=repo).stdout or "{}") == {}
    # the team remote still takes a push once S3 answers again
    run([DVC, "push", *BUILT], cwd=repo, env=team.env)
    print(f"dead S3: dvc push failed in {push_s:.1f} s: {proc.stderr.splitlines()[0][:160]}")
    print(f"  cache intact: {len(cache)} objects")
