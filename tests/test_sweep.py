"""ops.sweep before anything runs: the grid file, its validation with params.yaml's own
types, variant names, the comparison table, and the driver's refusals (a dirty tree, a
commit the git remote lacks, a bad key) in one line with nothing submitted.

The sweeps themselves run on a real Ray cluster in test_team.py (team stores), on the
embedded one-machine default below, and README's own `make sweep` lines and every shipped
grid in test_readme.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import BIN, REPO, commit_all, make_scratch_repo, run
from helpers.runs import all_runs
from ops import sweep
from ops.sweep import Grid, SweepError, Variant, VariantResult

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def _grid(tmp_path: Path, body: dict) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_grid_is_the_product_plus_listed_variants_each_with_the_common_set(tmp_path: Path) -> None:
    body = {
        "targets": "evaluate@cnn",
        "grid": {"train.lr": [0.001, 0.003], "seed": [0, 1]},
        "variants": [{"models.cnn.epochs": 2}],
        "set": {"train.train_limit": 500},
    }
    grid = sweep.load_grid(_grid(tmp_path, body), REPO / "params.yaml")
    assert grid.name == "g" and grid.targets == ["evaluate@cnn"]
    assert grid.swept == ["train.lr", "seed", "models.cnn.epochs"]
    got = [v.overrides for v in grid.variants]
    assert got[:4] == [
        {"train.train_limit": 500, "train.lr": lr, "seed": s}
        for lr in (0.001, 0.003)
        for s in (0, 1)
    ]
    assert got[4] == {"train.train_limit": 500, "models.cnn.epochs": 2}
    names = [v.name for v in grid.variants]
    assert len(set(names)) == 5 and all(n.startswith("g-") for n in names)
    # the same overrides give the same name (a rerun finds what it pushed), in any order
    again = sweep.load_grid(_grid(tmp_path, body), REPO / "params.yaml")
    assert [v.name for v in again.variants] == names
    flipped = {"train.lr": 0.001, "seed": 0, "train.train_limit": 500}
    assert sweep.variant_name("g", flipped) == names[0]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"grid": {"train.no_such_knob": [1, 2]}}, "no_such_knob"),
        ({"grid": {"train.lr": [0.001, -1.0]}}, "train.lr"),
        ({"grid": {"seed": [0]}, "set": {"attacks.pgd.steps": "many"}}, "attacks.pgd.steps"),
        ({"grid": {"seed": []}}, "non-empty list"),
        ({"grid": {"seed": [0]}, "sweep": 1}, "unknown key 'sweep'"),
        ({}, "no variants"),
    ],
)
def test_a_bad_grid_is_one_line_naming_it(tmp_path: Path, body: dict, needle: str) -> None:
    with pytest.raises(SweepError) as err:
        sweep.load_grid(_grid(tmp_path, body), REPO / "params.yaml")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_failing_variant_is_named(tmp_path: Path) -> None:
    body = {"grid": {"train.lr": [0.001, 0.0]}}
    with pytest.raises(SweepError, match=r"variant 2 \(train\.lr=0\.0\)"):
        sweep.load_grid(_grid(tmp_path, body), REPO / "params.yaml")


@pytest.mark.parametrize("value", [0.001, 1e-05, [0.1, 0.3], True, None, "sgd", {"a": 1}])
def test_set_args_round_trip_through_yaml(value: object) -> None:
    (flag, arg) = Variant("v", {"x.y": value}).set_args()
    key, _, text = arg.partition("=")
    # `++`: Hydra's add-or-override, so a key params.yaml does not list is set too
    assert flag == "-S" and key == "++x.y" and yaml.safe_load(text) == value


@pytest.mark.parametrize(
    ("output", "cause"),
    [
        (  # DVC's Hydra error: the cause, not the context printed after it
            "Reproducing experiment 'lr-1'\nERROR: Could not override 'models.cnn_bn.lr'.\n"
            "To append to your config use +models.cnn_bn.lr=0.004\nKey 'lr' is not in struct\n"
            "    full_key: models.cnn_bn.lr\n    object_type=dict",
            "Could not override 'models.cnn_bn.lr'. To append to your config use "
            "+models.cnn_bn.lr=0.004 Key 'lr' is not in struct",
        ),
        (  # a stage's own line beats DVC's summary
            "20:40:05 ERROR mnistlab.train: train@cnn: the training loss became nan\n"
            "ERROR: failed to reproduce 'train@cnn'",
            "mnistlab.train: train@cnn: the training loss became nan",
        ),
        ("something\nthe last line", "the last line"),
    ],
)
def test_a_failed_command_is_reported_by_the_line_naming_its_cause(output: str, cause: str) -> None:
    assert sweep.failure_cause(output) == cause


def test_table_shows_swept_params_and_the_metrics_that_differ() -> None:
    seeds = (1, 2, 3)
    grid = Grid("g", [], ["seed"], [Variant(f"g-{s}", {"seed": s}) for s in seeds])
    same = {"test_accuracy.cnn_bn": 0.99}
    results = [
        VariantResult("g-1", "done", {"seed": 1}, metrics={"test_accuracy.cnn": 0.9, **same}),
        VariantResult("g-2", "done", {"seed": 2}, metrics={"test_accuracy.cnn": 0.8, **same}),
        VariantResult("g-3", "failed", {"seed": 3}, error="boom"),
    ]
    md, text = sweep.table(grid, results)
    head, rule, a, b, c = md.splitlines()
    # a metric equal in every landed variant is left out; a failed one makes none differ
    assert head.split(" | ")[:4] == ["| experiment", "seed", "test_accuracy.cnn", "status"]
    assert "0.9000" in a and "0.8000" in b and "failed: boom" in c
    assert text.splitlines()[0].startswith("experiment,seed,")


# ----------------------------------------------------------------------------- the driver


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repo with this project's params.yaml, DVC with a local default remote, and a
    bare git remote `origin` holding its first commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    run(["git", "init", "-q", "-b", "main"], cwd=repo)
    run([str(BIN / "dvc"), "init", "-q"], cwd=repo)
    run([str(BIN / "dvc"), "remote", "add", "-d", "local", "../dvc-remote"], cwd=repo)
    run([*GIT, "add", "-A"], cwd=repo)
    run([*GIT, "commit", "-qm", "one"], cwd=repo)
    run(["git", "init", "-q", "--bare", str(tmp_path / "origin.git")], cwd=tmp_path)
    run(["git", "remote", "add", "origin", str(tmp_path / "origin.git")], cwd=repo)
    run(["git", "push", "-q", "origin", "main"], cwd=repo)
    return repo


def test_locate_one_machine_default(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MNISTLAB_TRACKING", raising=False)
    place = sweep.locate(project, None, None)
    assert place.git_url == str(project) and place.dvc_remote == "local"
    # `dvc remote add` stored the path relative to .dvc/; it names the same folder
    assert place.dvc_remote_url == str((project.parent / "dvc-remote").resolve())
    assert place.tracking_uri == f"sqlite:///{project}/mlflow.db"
    assert place.commit == run(["git", "rev-parse", "HEAD"], cwd=project).stdout.strip()


def test_locate_a_pushed_commit_on_a_named_remote(project: Path) -> None:
    place = sweep.locate(project, "origin", None)
    assert place.git_url == str(project.parent / "origin.git")


def test_locate_refuses_an_unpushed_commit(project: Path) -> None:
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "\n")
    run([*GIT, "commit", "-qam", "two"], cwd=project)
    with pytest.raises(SweepError, match=r"commit \w{7} is not on git remote 'origin'"):
        sweep.locate(project, "origin", None)


def test_locate_refuses_a_dirty_tree(project: Path) -> None:
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "\n")
    with pytest.raises(SweepError, match="uncommitted changes \\(params.yaml"):
        sweep.locate(project, None, None)


def test_locate_refuses_an_unknown_dvc_remote(project: Path) -> None:
    with pytest.raises(SweepError, match="DVC remote 'team' is not configured"):
        sweep.locate(project, None, "team")


@pytest.mark.parametrize(
    ("grid", "args", "needle"),
    [
        ({"grid": {"train.no_such_knob": [1]}}, [], "train.no_such_knob"),
        ({"grid": {"seed": [1, 2]}}, ["--git-remote", "nosuch"], "git remote 'nosuch'"),
        ({"grid": {"seed": [1, 2]}}, ["--git-remote", "origin"], "is not on git remote"),
    ],
)
def test_driver_fails_in_one_line_before_anything_runs(
    project: Path, grid: dict, args: list[str], needle: str
) -> None:
    if "origin" in args:  # a commit made after the push
        (project / "params.yaml").write_text((project / "params.yaml").read_text() + "\n")
        run([*GIT, "commit", "-qam", "unpushed"], cwd=project)
    path = project / "sweeps" / "bad.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(grid))
    env = {"RAY_ADDRESS": "127.0.0.1:9"}  # nothing listens: connecting would hang or fail
    proc = subprocess.run(
        [sys.executable, "-m", "ops.sweep", str(path), *args],
        cwd=project,
        env={**_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
    assert not (project / "sweeps" / "results").exists()
    assert not (project / "mlflow.db").exists()  # no sweep run was opened either


def test_a_sweep_of_an_unbuilt_clone_stops_before_ray(tmp_path: Path, mnist_raw: Path) -> None:
    """A fresh clone before `make repro`: its dvc.lock names outputs that no cache and no
    remote holds, so every variant would fail with DVC's "missing files"; the driver
    says what to run instead, in one line, before Ray starts."""
    repo = make_scratch_repo(tmp_path, mnist_raw)
    env = {"RAY_ADDRESS": "127.0.0.1:9"}  # nothing listens: starting Ray would fail
    proc = subprocess.run(
        [sys.executable, "-m", "ops.sweep", "sweeps/lr.yaml"],
        cwd=repo,
        env={**_env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "is not built" in proc.stderr and "run `make repro` here" in proc.stderr
    assert not (repo / "sweeps" / "results" / "lr.json").exists()  # nothing written


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PATH": f"{BIN}:{os.environ['PATH']}"}


# ----------------------------------------------------------------------------- one machine

SEEDS = {
    "targets": ["evaluate@cnn"],
    "grid": {"seed": [1, 2]},
    "variants": [{"seed": 3, "train.optimizer": "sgd", "train.lr": 1e5}],  # valid; diverges
    "set": {"train.train_limit": 1000, "evaluate.test_limit": 500},
}


@pytest.fixture
def built(pipeline_copy: Path) -> Path:
    """A copy of the tiny build with everything committed, and a grid of two seeds: a
    fresh clone after `make repro`, nothing else set up."""
    repo = pipeline_copy
    (repo / "sweeps").mkdir(exist_ok=True)
    (repo / "sweeps" / "seeds.yaml").write_text(yaml.safe_dump(SEEDS, sort_keys=False))
    commit_all(repo, "built")
    return repo


def _sweep(repo: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in _env().items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return subprocess.run(
        [sys.executable, "-m", "ops.sweep", "sweeps/seeds.yaml"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.mark.slow
def test_one_machine_sweep_with_nothing_set_up(built: Path) -> None:
    """The default: an embedded Ray, this repo as the git remote, its local DVC remote, its
    mlflow.db. Then the same sweep again reads back what was pushed and runs nothing."""
    grid = sweep.load_grid(built / "sweeps" / "seeds.yaml", built / "params.yaml")
    names = sorted(v.name for v in grid.variants[:2])
    diverges = grid.variants[2].name
    baseline = run(["git", "rev-parse", "HEAD"], cwd=built).stdout.strip()

    proc = _sweep(built)
    # the diverging variant fails with its stage's own line; the other two land
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep seeds: 2/3 done, 0 running or queued, 1 failed" in proc.stdout
    assert f"{diverges}: failed: " in proc.stdout
    assert "cnn: the training loss became nan" in proc.stdout
    refs = sweep.remote_exp_commits(str(built), baseline, built)
    assert sorted(refs) == names
    results = json.loads((built / "sweeps" / "results" / "seeds.json").read_text())
    assert [r["status"] for r in results] == ["done", "done", "failed"]
    results = results[:2]
    accs = {r["name"]: r["metrics"]["test_accuracy.cnn"] for r in results}
    for name, sha in refs.items():  # each result is its experiment's committed metrics
        ev = json.loads(run(["git", "show", f"{sha}:metrics/evaluate/cnn.json"], cwd=built).stdout)
        assert ev["n_test"] == 500 and ev["test_accuracy"] == accs[name]
        lock = yaml.safe_load(run(["git", "show", f"{sha}:dvc.lock"], cwd=built).stdout)
        (out,) = [o for o in lock["stages"]["train@cnn"]["outs"] if o["path"] == "models/cnn.pt"]
        md5 = out["md5"]
        assert (built / ".dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    shown = run(["dvc", "exp", "show", "--csv"], cwd=built).stdout
    assert all(n in shown for n in names)
    table = (built / "sweeps" / "results" / "seeds.md").read_text()
    head = "| experiment | seed | train.optimizer | train.lr | test_accuracy.cnn | status |"
    assert table.splitlines()[0].startswith(head)

    # MLflow: one sweep run holding each variant's pipeline run, holding its stage runs
    sweeps = [r for r in all_runs(built) if r.data.tags.get("run_kind") == "sweep"]
    (top,) = sweeps
    assert top.info.status == "FAILED"  # one variant failed
    for name in names:
        mine = [r for r in all_runs(built) if r.data.tags.get("dvc_exp_name") == name]
        (parent,) = [r for r in mine if r.data.tags.get("run_kind") == "pipeline"]
        assert parent.data.tags["mlflow.parentRunId"] == top.info.run_id
        stages = [r for r in mine if r.data.tags.get("run_kind") == "stage"]
        assert sorted(r.info.run_name for r in stages) == ["evaluate@cnn", "train@cnn"]
        assert {r.data.tags["mlflow.parentRunId"] for r in stages} == {parent.info.run_id}
        # threads: auto gave each stage the one CPU its Ray task asked for
        assert {r.data.tags["torch_threads"] for r in stages} == {"1"}
    n_runs = len(_landed(built, names))

    again = _sweep(built)  # the landed two are read back; the failed one is tried again
    assert again.returncode == 1, again.stderr[-3000:]
    results = json.loads((built / "sweeps" / "results" / "seeds.json").read_text())
    assert [r["status"] for r in results] == ["skipped", "skipped", "failed"]
    assert {r["name"]: r["metrics"]["test_accuracy.cnn"] for r in results[:2]} == accs
    assert sweep.remote_exp_commits(str(built), baseline, built) == refs
    assert len(_landed(built, names)) == n_runs  # nothing of theirs ran again
    assert len([r for r in all_runs(built) if r.data.tags.get("run_kind") == "sweep"]) == 1


def _landed(repo: Path, names: list[str]) -> list:
    return [r for r in all_runs(repo) if r.data.tags.get("dvc_exp_name") in names]


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_the_shipped_grids_are_valid(path: Path) -> None:
    grid = sweep.load_grid(path, REPO / "params.yaml")
    assert grid.variants and grid.swept


# --------------------------------------------------------------------------- the Pareto front


def _result(name: str, minutes: float, robust: float, clean: float, **extra: Any) -> dict:
    metrics = {
        "train_minutes.cnn_adv": minutes,
        "robust_accuracy.standard.cnn_adv.0.3": robust,
        "test_accuracy.cnn_adv": clean,
    }
    overrides = {"models.cnn_adv.adversarial.method": "pgd", "models.cnn_adv.epochs": int(minutes)}
    return {"name": name, "status": "done", "overrides": overrides, "metrics": metrics} | extra


def test_pareto_front_keeps_what_nothing_beats_on_both_axes() -> None:
    from ops import pareto

    results = [
        _result("slow-weak", 9.0, 0.90, 0.99),  # beaten by fast-strong on both
        _result("fast-weak", 5.0, 0.89, 0.99),
        _result("fast-strong", 6.0, 0.92, 0.98),
        _result("slowest-best", 12.0, 0.93, 0.99),
        _result("tie", 6.0, 0.92, 0.97),  # equal to fast-strong: neither beats the other
        _result("failed", 1.0, 0.99, 0.99, status="failed"),
    ]
    assert pareto.front(pareto.points(results)) == {
        "fast-weak",
        "fast-strong",
        "tie",
        "slowest-best",
    }
    rows = pareto.table(results).splitlines()[2:]
    assert [r.split(" | ")[1] for r in rows] == ["**5.0**", "**6.0**", "**6.0**", "9.0", "**12.0**"]
    assert len(rows) == 5 and "failed" not in pareto.table(results)
    assert rows[0] == "| **method pgd, epochs 5** | **5.0** | **89.0%** | **99.00%** | yes |"
    assert rows[3] == "| method pgd, epochs 9 | 9.0 | 90.0% | 99.00% |  |"


def test_pareto_tables_in_the_docs_are_the_committed_results() -> None:
    """README's and BENCHMARKS' front is the one sweeps/results/<sweep>.json gives; after
    a sweep, regenerate with `python -m ops.pareto sweeps/results/<sweep>.json --write
    README.md BENCHMARKS.md bench/notes.md`."""
    from ops import pareto

    shown = 0
    for path in sorted((REPO / "sweeps" / "results").glob("*.json")):
        results = json.loads(path.read_text())
        for doc in ("README.md", "BENCHMARKS.md", "bench/notes.md"):
            text = (REPO / doc).read_text()
            if pareto.markers(path.stem)[0] in text:
                assert pareto.block(text, path.stem) == pareto.table(results), (doc, path.name)
                shown += 1
    assert shown >= 3  # the robust sweep's front, in each


def test_only_names_a_variant_of_the_grid(capsys: pytest.CaptureFixture[str]) -> None:
    rc = sweep.main([str(REPO / "sweeps" / "robust.yaml"), "--only", "robust-00000000"])
    err = capsys.readouterr().err
    assert rc == 2 and "no variant robust-00000000 (it has robust-" in err, err
