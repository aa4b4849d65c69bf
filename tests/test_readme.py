"""README's commands, as written: each `dvc exp run`, `dvc params diff` and `make sweep`
line of its code blocks runs on the tiny build. The text is read from README.md itself,
so an edited README is a tested one.

A `dvc exp run` line runs as written plus the stages its overrides reach (the first
model's `train@`, `attack@<form>-<model>`, ...), so the suite does not pay for a whole
study per line: what can fail is DVC taking the override and validate_params accepting
it. A `make sweep` line runs its grid's first variant (`SWEEP_ARGS=--first 1`) with this
venv; every other grid in `sweeps/` too.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from helpers.pipeline import TinyBuild
from helpers.scratch import commit_all, run
from helpers.study import MODELS

# one workspace for README's commands: one worker runs them all
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("readme")]

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent


def readme_commands(prefixes: tuple[str, ...]) -> list[str]:
    """The lines of README's bash blocks that start with one of ``prefixes`` (comments
    dropped), leaving out those with a ``<placeholder>`` for the reader to fill in."""
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(prefixes) and "<" not in line:
                lines.append(line)
    return lines


def test_readme_shows_the_commands_this_file_runs() -> None:
    exp = readme_commands(("dvc exp run",))
    assert any("-S models." in c for c in exp), exp  # a per-model override
    assert any("--queue" in c for c in exp) and any("--queue" not in c for c in exp)
    assert readme_commands(("dvc params diff",))
    assert any("GRID=" in c for c in readme_commands(("make sweep",)))


def targets_for(command: str) -> list[str]:
    """The stages a `dvc exp run -S ...` line's overrides reach, cheapest first."""
    words = shlex.split(command)
    keys = [words[i + 1].split("=", 1)[0].lstrip("+") for i, w in enumerate(words) if w == "-S"]
    first = next(iter(MODELS))
    out = []
    for key in keys:
        parts = key.split(".")
        if parts[0] == "models":
            out.append(f"train@{parts[1]}")
        elif parts[0] == "attacks":
            out.append(f"attack@{parts[1]}-{first}")
        elif parts[0] == "train":
            out.append(f"train@{first}")
        else:
            out.append("validate_params")
    return list(dict.fromkeys(out))


@pytest.fixture(scope="module")
def workspace(tiny_build: TinyBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tiny_build.copy(tmp_path_factory.mktemp("readme") / "repo")
    commit_all(repo, "built")  # a sweep runs a commit; an experiment's baseline
    return repo


@pytest.mark.parametrize("command", readme_commands(("dvc exp run",)))
def test_readme_experiment(workspace: Path, command: str) -> None:
    words = shlex.split(command)
    if "--queue" in words:  # DVC applies -S when it queues: a bad key fails here
        run(words, cwd=workspace)
        queued = run(["dvc", "queue", "status"], cwd=workspace).stdout
        assert "Queued" in queued
        run(["dvc", "queue", "remove", "--queued"], cwd=workspace)
        return
    out = run([*words, *targets_for(command)], cwd=workspace, timeout=1200)
    assert "Ran experiment(s)" in out.stdout + out.stderr or "Reproduced" in out.stdout, out


@pytest.mark.parametrize("command", readme_commands(("dvc params diff",)))
def test_readme_params_diff(workspace: Path, command: str) -> None:
    params = workspace / "params.yaml"
    text = params.read_text()
    raw = yaml.safe_load(text)
    raw["seed"] = raw["seed"] + 1
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        out = run(shlex.split(command), cwd=workspace).stdout
    finally:
        params.write_text(text)
    assert re.search(r"seed\s+\d+\s+\d+", out), out


def _sweep_lines() -> list[str]:
    """README's `make sweep` lines, one per grid, then every other shipped grid."""
    by_grid: dict[str, str] = {}
    for line in readme_commands(("make sweep",)):
        grid = re.search(r"GRID=(\S+)", line)
        by_grid.setdefault(grid.group(1) if grid else "sweeps/lr.yaml", line)
    lines, shown = list(by_grid.values()), set(by_grid)
    shipped = sorted(
        f"make sweep GRID={p.relative_to(REPO)}"
        for p in (REPO / "sweeps").glob("*.yaml")
        if str(p.relative_to(REPO)) not in shown
    )
    return lines + shipped


@pytest.mark.parametrize("command", _sweep_lines())
def test_readme_sweep_lands_its_first_variant(workspace: Path, command: str) -> None:
    # the experiments above ran in the workspace (`dvc exp run` leaves its last one there);
    # a sweep runs a commit, so commit what is there
    if run(["git", "status", "--porcelain"], cwd=workspace).stdout.strip():
        commit_all(workspace, "after the experiments")
    words = shlex.split(command)
    env = {"RAY_ADDRESS": "", "MLFLOW_TRACKING_URI": ""}
    # this venv, never rebuilt from here (-o: make treats its markers as up to date; a
    # rebuild would `rm -rf` the venv the suite runs in)
    keep = ["-o", f"{VENV}/.deps", "-o", f"{VENV}/.pkg"]
    out = run(
        [*words, f"VENV={VENV}", "SWEEP_ARGS=--first 1", *keep],
        cwd=workspace,
        env=env,
        unset=["RAY_ADDRESS", "MLFLOW_TRACKING_URI"],
        timeout=1800,
    )
    grid = re.search(r"GRID=(\S+)", command).group(1)
    name = Path(grid).stem
    assert f"sweep {name}: 1/1 done, 0 running or queued, 0 failed" in out.stdout, out.stdout
