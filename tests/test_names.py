"""Names once: the models and the attack forms are listed in params.yaml and nowhere else.

Every list of models or forms in the code, the tests, the benchmarks, the ops tools and
dvc.yaml derives from params.yaml (``Params.models``, ``Params.attacks``) or from what
the code provides (``mnistlab.core.archs.known``, ``mnistlab.core.config.known_forms``).
This test walks every Python file with ``ast`` and fails on a literal collection (list,
tuple, set, dict keys) holding two or more of the study's model names or three or more of
its form names (two can be an ensemble's members, ``{"pgd": ..., "strong": ...}``): a
hand-kept list that would not grow with params.yaml. The few places that name the
study's own models on purpose (the reference report's numbers, which exist only for
the models it trained) are listed below, each with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
MODELS = set(PARAMS["models"])
FORMS = set(PARAMS["attacks"])
ROOTS = ("src", "stages", "ops", "bench", "tests", "serving")

# (file, the names it may list together): why.
ALLOWED = {
    # The reference course report trained only these two: its numbers are keyed by them.
    ("src/mnistlab/report/__init__.py", frozenset({"cnn", "cnn_bn"})),
    # The tiny profile shrinks each study form's own knobs (a new form runs at its size).
    ("tests/helpers/scratch.py", frozenset(FORMS)),
    # The transfer matrices the study's forms write, checked on the tiny build.
    ("tests/test_pipeline.py", frozenset({"class_model", "targeted", "noise", "pgd"})),
    # Fake metrics of the study's three models, rendered into README's table.
    ("tests/test_results.py", frozenset({"cnn", "cnn_bn", "cnn_adv"})),
}
AT_LEAST = {"models": 2, "forms": 3}


def _literal_names(node: ast.AST) -> set[str]:
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        elts = node.elts
    elif isinstance(node, ast.Dict):
        elts = [k for k in node.keys if k is not None]
    else:
        return set()
    return {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}


def _python_files() -> list[Path]:
    """Every Python file of the project but this one (its ALLOWED names them on purpose)."""
    files = []
    for root in ROOTS:
        files += [p for p in (REPO / root).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(f for f in files if f != Path(__file__).resolve())


def hard_coded_lists(path: Path) -> list[str]:
    """``line: names`` of every literal collection in ``path`` naming 2+ models or forms."""
    rel = str(path.relative_to(REPO))
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = _literal_names(node)
        for kind, least in ((MODELS, AT_LEAST["models"]), (FORMS, AT_LEAST["forms"])):
            hit = names & kind
            if len(hit) >= least and (rel, frozenset(hit)) not in ALLOWED:
                found.append(f"{rel}:{node.lineno}: {sorted(hit)}")
    return found


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_hand_kept_list_of_models_or_forms(path: Path) -> None:
    found = hard_coded_lists(path)
    assert not found, f"derive these from params.yaml: {found}"


def test_the_detector_finds_a_hand_kept_list(tmp_path: Path) -> None:
    model_a, model_b = sorted(MODELS)[:2]
    form_a, form_b, form_c = sorted(FORMS)[:3]
    src = REPO / "tests" / "_names_probe.py"  # inside the repo: the walker's paths are relative
    src.write_text(
        f"M = ({model_a!r}, {model_b!r})\nF = {{{form_a!r}: 1, {form_b!r}: 2, {form_c!r}: 3}}\n"
    )
    try:
        found = hard_coded_lists(src)
    finally:
        src.unlink()
    assert len(found) == 2, found


def test_dvc_yaml_names_no_model_and_no_form() -> None:
    """dvc.yaml iterates over params.yaml's `models` and `attacks`; it lists neither."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert "vars" not in dvc
    stages = dvc["stages"]
    for name in ("architecture", "train", "evaluate", "visualize", "attribution"):
        assert stages[name]["foreach"] == "${models}"
    assert stages["attack"]["matrix"] == {"form": "${attacks}", "model": "${models}"}

    def strings(node: object) -> list[str]:
        if isinstance(node, dict):
            return [s for k, v in node.items() for s in (str(k), *strings(v))]
        if isinstance(node, list):
            return [s for v in node for s in strings(v)]
        return [str(node)]

    for text in strings(dvc):
        for word in text.replace("/", " ").replace("-", " ").replace(".", " ").split():
            assert word not in MODELS, f"dvc.yaml names model {word!r}: {text}"


def test_stages_follow_params_yaml() -> None:
    """The stages DVC expands are exactly params.yaml's models and forms."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        names = {s.addressing for s in repo.index.stages}
    for model in MODELS:
        assert f"train@{model}" in names and f"evaluate@{model}" in names
        for form in FORMS:
            assert f"attack@{form}-{model}" in names
    per_model = {n for n in names if "@" in n}
    assert len(per_model) == len(MODELS) * (5 + len(FORMS))
