"""The study grows by one entry: a model or an attack form added in params.yaml.

Bad entries stop ``validate_params`` (exit 2, one line naming the model and the key)
before any stage runs. On the tiny build, a new model or form makes exactly its own
stage instances and the aggregates stale, ``dvc repro`` builds them, the study's models'
outputs stay byte for byte, and the report shows the new entries.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.pipeline import TinyBuild, ran, rerun_scope, stale
from helpers.scratch import run, write_params
from helpers.study import FORMS, MODELS

REPO = Path(__file__).resolve().parents[1]
PER_MODEL = ("architecture", "train", "evaluate", "visualize", "attribution")
AGGREGATES = {"transfer", "compare", "report"}

# Two models beside the study's: an MLP (nothing a conv-layer method can read) and a CNN
# with a width per conv layer whose channel counts leave empty cells in a square grid.
NEW_MODELS = {
    "mlp": {"label": "MLP 512-256", "arch": "mlp", "arch_args": {"hidden": [512, 256]}},
    "wide": {
        "label": "CNN 64-128",
        "arch": "convnet",
        "arch_args": {"channels": [64, 128], "hidden": 128, "batch_norm": False},
    },
}
NEW_FORM = {"random_noise": {"n_images": 100, "batch_size": 100, "eps": [0.1, 0.3], "draws": 2}}


def instances(models: list[str], forms: list[str]) -> set[str]:
    """The per-model and attack stage instances of ``models`` x ``forms``."""
    names = {f"{stage}@{m}" for stage in PER_MODEL for m in models}
    return names | {f"attack@{f}-{m}" for f in forms for m in models}


# ----------------------------------------------------------------- bad entries, one line


def _validate(tmp_path: Path, edit, src: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m stages validate_params`` in ``tmp_path`` on params.yaml as ``edit``
    leaves it, with the project's code (or the code under ``src``)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    text = edit(raw)
    (tmp_path / "params.yaml").write_text(
        text if isinstance(text, str) else yaml.safe_dump(raw, sort_keys=False)
    )
    env = {"PYTHONPATH": f"{src or REPO / 'src'}:{REPO}", "MNISTLAB_TRACKING": "0"}
    return subprocess.run(
        [sys.executable, "-m", "stages", "validate_params", "--out", str(tmp_path / "ok.json")],
        cwd=tmp_path,
        env={**__import__("os").environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if " ERROR " in ln]
    assert len(lines) == 1, proc.stderr
    assert proc.returncode == 2, proc.stderr
    return lines[0]


def _add(name: str, entry: dict):
    def edit(raw: dict) -> None:
        raw["models"][name] = entry

    return edit


def test_unknown_architecture_is_one_line(tmp_path: Path) -> None:
    proc = _validate(tmp_path, _add("res", {"arch": "resnet", "arch_args": {}}))
    line = _error_line(proc)
    assert "models.res.arch: unknown architecture 'resnet' (known are cnn, convnet, mlp)" in line
    assert not (tmp_path / "ok.json").exists()


def test_wrong_keyword_is_one_line(tmp_path: Path) -> None:
    proc = _validate(tmp_path, _add("mlp", {"arch": "mlp", "arch_args": {"hiden": [64]}}))
    line = _error_line(proc)
    assert "params.yaml: models.mlp.arch_args.hiden: unknown keyword of architecture 'mlp'" in line


def test_missing_keyword_is_one_line(tmp_path: Path) -> None:
    proc = _validate(tmp_path, _add("mlp", {"arch": "mlp", "arch_args": {}}))
    assert "models.mlp.arch_args.hidden: missing keyword of architecture 'mlp'" in (
        _error_line(proc)
    )


def test_a_model_that_is_not_a_10_class_classifier_is_one_line(tmp_path: Path) -> None:
    """An architecture dropped into core/archs whose output is not 10 logits."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "mnistlab" / "core" / "archs" / "seven.py").write_text(
        "from torch import nn\n\n\nclass Model(nn.Module):\n"
        "    def __init__(self, *, width: int) -> None:\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(784, width)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(x.flatten(1))\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    proc = _validate(work, _add("seven", {"arch": "seven", "arch_args": {"width": 7}}), src)
    line = _error_line(proc)
    assert (
        "models.seven: architecture 'seven' returns (1, 7) for a (1, 1, 28, 28) image, "
        "not (1, 10) logits" in line
    )


def test_duplicate_model_name_is_one_line(tmp_path: Path) -> None:
    def edit(raw: dict) -> str:
        text = yaml.safe_dump(raw, sort_keys=False)
        first = next(iter(raw["models"]))
        return text.replace("models:\n", f"models:\n  {first}:\n    arch: mlp\n", 1)

    line = _error_line(_validate(tmp_path, edit))
    assert f"duplicate key '{next(iter(MODELS))}'" in line and "at line" in line


def test_unknown_attack_form_is_one_line(tmp_path: Path) -> None:
    def edit(raw: dict) -> None:
        raw["attacks"]["deepfool"] = {"steps": 10}

    line = _error_line(_validate(tmp_path, edit))
    assert "params.yaml: attacks.deepfool: unknown attack form (the code provides: " in line


@pytest.mark.slow  # reads the tiny build
def test_a_bad_entry_stops_dvc_repro_before_any_stage(tiny_build: TinyBuild, tmp_path) -> None:
    """Nothing of the built study is lost: validate_params fails first, every output stays."""
    repo = tiny_build.copy(tmp_path / "repo")
    lock = (repo / "dvc.lock").read_text()
    write_params(repo, {"models": {"mlp": {"arch": "mlp", "arch_args": {"hiden": [8]}}}})
    proc = run(["dvc", "repro"], cwd=repo, check=False)
    assert proc.returncode != 0
    assert ran(proc.stdout) == {"validate_params"}, proc.stdout
    assert "models.mlp.arch_args.hiden: unknown keyword" in proc.stdout + proc.stderr
    assert (repo / "dvc.lock").read_text() == lock
    assert all((repo / "models" / f"{m}.pt").is_file() for m in MODELS)
    assert (repo / "report" / "index.html").is_file()


# ------------------------------------------------------------- growing a built study


def _locked_outs(repo: Path, stages: set[str]) -> dict[str, object]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {s: [(o["path"], o.get("md5")) for o in lock[s].get("outs", [])] for s in stages}


@pytest.mark.slow
def test_adding_models_and_a_form_runs_only_what_they_add(
    tiny_build: TinyBuild, tmp_path: Path
) -> None:
    """One `dvc repro` builds two models and a form added at once; what each addition
    alone makes stale is read from `dvc status` first (helpers.pipeline.stale), so the
    suite pays for one growth, not two."""
    repo = tiny_build.copy(tmp_path / "repo")
    study = instances(list(MODELS), list(FORMS))
    before = _locked_outs(repo, study)
    models = [*MODELS, *NEW_MODELS]

    # an attack form alone: its instances on the study's models, then the aggregates
    # (they read the new form's files: stale once those exist)
    write_params(repo, {"attacks": NEW_FORM})
    added = {f"attack@random_noise-{m}" for m in MODELS}
    assert stale(repo) == {"validate_params", *added}
    assert rerun_scope(repo) == {"validate_params", *added, *AGGREGATES}

    # two models as well: their instances (every form, the new one too) and the
    # aggregates; the study's own stages stay as they are
    run(["git", "checkout", "--", "params.yaml"], cwd=repo)
    write_params(repo, {"models": NEW_MODELS})
    new = instances(list(NEW_MODELS), list(FORMS))
    assert stale(repo) == {"validate_params", *new, *AGGREGATES}
    write_params(repo, {"attacks": NEW_FORM})
    new |= instances(list(NEW_MODELS), ["random_noise"])
    assert stale(repo) == {"validate_params", *new, *added, *AGGREGATES}

    out = run(["dvc", "repro"], cwd=repo, timeout=3600)
    assert ran(out.stdout) == {"validate_params", *new, *added, *AGGREGATES}
    assert _locked_outs(repo, study) == before  # the study's outputs, byte for byte
    assert stale(repo) == set()

    transfer = json.loads((repo / "metrics" / "transfer.json").read_text())
    for matrix in transfer["success"].values():
        assert list(matrix) == models and all(list(row) == models for row in matrix.values())
    assert list(transfer["success"]["random_noise"]) == models
    vis = json.loads((repo / "metrics" / "visualize" / "mlp.json").read_text())
    assert "filters" in vis["not_applicable"]
    attr = json.loads((repo / "metrics" / "attribution" / "mlp.json").read_text())
    assert "grad_cam" in attr["not_applicable"]
    page = (repo / "report" / "index.html").read_text()
    for entry in NEW_MODELS.values():
        assert entry["label"] in page
    assert "not applicable" in page
    assert page.count(": layers</h4>") == len(models)  # each model's architecture table
    compare = json.loads((repo / "metrics" / "compare.json").read_text())
    assert "random_noise" in json.dumps(compare)
    assert "random_noise" in page
