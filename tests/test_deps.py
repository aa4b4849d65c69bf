"""`dvc repro` is only as right as each stage's deps: check them against the real imports.

A stage's code deps are the science it runs: its entry module, the ``core`` files it
imports (file by file, so an edit to one reruns only the stages that import it) and its
own package(s) (by directory, so a new file is covered without anyone remembering). The
harness (``src/mnistlab/harness``, and the launcher ``stages/__main__.py``) runs and
records stages and changes no output byte: no stage declares it, and no science imports
it. These tests walk each stage's first-party imports with ``ast`` and fail when a stage
imports science it does not declare (an edit there would rerun nothing), declares code it
never imports (an edit there would rerun it for nothing) or declares the harness (a
log-line fix would rerun the study).
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import pytest

from helpers.deps import entry_and_args, imported_files, imported_names, is_harness

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "mnistlab"
CORE = SRC / "core"
HARNESS = [SRC / "harness", REPO / "stages" / "__main__.py"]
# Importing any module runs these package files; they must stay empty (a docstring).
IMPLICIT = {
    SRC / "__init__.py",
    SRC / "attacks" / "__init__.py",
    CORE / "attack_params" / "__init__.py",
    REPO / "stages" / "__init__.py",
}


def stages() -> list[tuple[str, str, list[Path]]]:
    """``(name, cmd, code deps)`` of every expanded stage, as DVC itself reads dvc.yaml."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        out = []
        for stage in repo.index.stages:
            deps = [REPO / d.def_path for d in stage.deps]
            code = [d for d in deps if d.is_relative_to(SRC) or d.is_relative_to(REPO / "stages")]
            reads_checkpoint = any(d.suffix == ".pt" or d == REPO / "models" for d in deps)
            out.append((stage.addressing, stage.cmd, code, reads_checkpoint))
    return out


def stage_args(cmd: str, reads_checkpoint: bool) -> tuple[list[str], dict[str, str]]:
    """The entry module and arguments of ``cmd``, with ``arch`` (the architecture of its
    ``--model`` in params.yaml) for a stage that builds its model from params. A stage
    that reads a checkpoint reaches the architecture through it: the checkpoint records
    the digest of the architecture's source and ``load_checkpoint`` refuses other code,
    so the architecture is in that stage's cache key by way of the checkpoint."""
    import yaml

    entries, args = entry_and_args(cmd)
    if "model" in args and not reads_checkpoint:
        models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
        args["arch"] = models[args["model"]]["arch"]
    return entries, args


ALL = stages()
STAGES = [s[:3] for s in ALL]


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == d or path.is_relative_to(d) for d in deps)


@pytest.mark.parametrize("path", sorted(IMPLICIT), ids=lambda p: str(p.relative_to(REPO)))
def test_implicit_package_files_are_empty(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in tree.body)


def test_every_stage_declares_its_code() -> None:
    assert len(STAGES) >= 20


@functools.cache
def _imports(cmd: str, reads_checkpoint: bool) -> frozenset[Path]:
    entries, args = stage_args(cmd, reads_checkpoint)
    return frozenset(imported_files(REPO, entries, args) - IMPLICIT)


@pytest.mark.parametrize(("name", "cmd", "deps", "reads_checkpoint"), ALL, ids=[s[0] for s in ALL])
def test_stage_imports_only_what_it_declares(
    name: str, cmd: str, deps: list[Path], reads_checkpoint: bool
) -> None:
    files = _imports(cmd, reads_checkpoint)
    undeclared = sorted(str(f.relative_to(REPO)) for f in files if not covered(f, deps))
    assert not undeclared, f"{name} imports code it does not declare: {undeclared}"
    # A matrix (`attack@<form>-<model>`) has one deps list for all its items, DVC's
    # limit: a core file one form imports (core/autopgd.py: strong) is declared by all.
    siblings = [s for s in ALL if s[0].split("@")[0] == name.split("@")[0]]
    in_matrix = set().union(*(_imports(s[1], s[3]) for s in siblings)) if "@" in name else files
    unused = sorted(
        str(d.relative_to(REPO))
        for d in deps
        if not any(f == d or f.is_relative_to(d) for f in in_matrix)
    )
    assert not unused, f"{name} declares code it never imports: {unused}"


def test_stage_code_is_declared_by_directory_core_by_file() -> None:
    """Stage packages are declared whole (a new file in one is covered without anyone
    listing it); core file by file (an edit to one reruns only the stages importing it),
    but for validate_params, which builds every model and so runs every architecture."""
    for name, _, deps in STAGES:
        for d in deps:
            if d.is_relative_to(CORE) and not (name == "validate_params" and d == CORE / "archs"):
                assert d.is_file(), f"{name}: declare the core files it imports, not {d}"
            elif d.is_relative_to(SRC):
                assert d.is_dir(), f"{name}: declare the package directory, not {d}"


@pytest.mark.parametrize(("name", "cmd", "deps"), STAGES, ids=[s[0] for s in STAGES])
def test_no_stage_declares_the_harness(name: str, cmd: str, deps: list[Path]) -> None:
    declared = [d for d in deps if any(d == h or d.is_relative_to(h) for h in HARNESS)]
    assert not declared, f"{name} declares harness code: {declared}"


def _modules(package: Path) -> list[tuple[Path, set[str]]]:
    return [(p, imported_names(ast.parse(p.read_text()))) for p in sorted(package.rglob("*.py"))]


def test_science_never_imports_the_harness() -> None:
    """Core and every stage package: an import of the harness would make recording code
    part of what decides the outputs, yet outside every stage's cache key."""
    for path, names in _modules(SRC):
        if path.is_relative_to(SRC / "harness"):
            continue
        bad = sorted(n for n in names if is_harness(n))
        assert not bad, f"{path.relative_to(REPO)} imports the harness: {bad}"


def test_harness_imports_only_core_and_itself() -> None:
    for path, names in _modules(SRC / "harness"):
        bad = sorted(
            n
            for n in names
            if n.startswith("mnistlab.") and n.split(".")[1] not in ("core", "harness")
        )
        assert not bad, f"{path.relative_to(REPO)} imports science packages: {bad}"


def _package_imports(package: Path) -> set[str]:
    """Top-level mnistlab packages (``core``, ``train``, ...) imported by ``package``'s files."""
    found = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            found.update(
                n.split(".")[1] for n in names if n.startswith("mnistlab.") and n.count(".") >= 1
            )
    return found


def test_core_imports_no_stage_package() -> None:
    assert _package_imports(SRC / "core") <= {"core"}


def test_stage_packages_import_only_core_and_declared_packages() -> None:
    """A stage package may import only core, itself, and what every stage using it declares."""
    for package in sorted(
        p for p in SRC.iterdir() if p.is_dir() and p.name not in ("core", "harness", "__pycache__")
    ):
        users = [deps for _, _, deps in STAGES if any(d.is_relative_to(package) for d in deps)]
        assert users, f"no stage declares {package.name}"
        allowed = {"core", package.name}
        allowed |= set.intersection(
            *(
                {d.relative_to(SRC).parts[0] for d in deps if d.is_relative_to(SRC)}
                for deps in users
            )
        )
        extra = _package_imports(package) - allowed
        assert not extra, f"mnistlab.{package.name} imports {sorted(extra)} beyond its stages"


def test_committed_lock_is_true_to_the_committed_code(tmp_path: Path) -> None:
    """A clean clone of HEAD: no stage's code, params or command differs from dvc.lock
    (outputs are absent there, so deps that stages produce are left out). A release whose
    science changed without a `dvc repro` fails here, not on a user's machine."""
    import json
    import subprocess

    import yaml

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    dvc = Path(sys.executable).with_name("dvc")
    out = subprocess.run(
        [str(dvc), "status", "--json"], cwd=clone, check=True, capture_output=True, text=True
    ).stdout
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    produced = [Path(o["path"]) for s in lock.values() for o in s.get("outs", [])]

    def made_here(path: str) -> bool:  # an output, or a folder that holds outputs
        return any(p == Path(path) or p.is_relative_to(path) for p in produced)

    stale = []
    for stage, items in json.loads(out or "{}").items():
        for item in items:
            if not isinstance(item, dict):  # "changed command", "always changed"
                stale.append((stage, item))
                continue
            for path, state in item.get("changed deps", {}).items():
                if isinstance(state, dict):  # params: {key: modified/new/deleted}
                    stale.append((stage, path, state))
                elif not made_here(path):
                    stale.append((stage, path, state))
    assert stale == [], f"dvc.lock is stale at HEAD (run `make repro`): {stale[:10]}"
