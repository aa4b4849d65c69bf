"""README's results table is the one the committed metrics give (ops/results.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from ops import results


def _write(root: Path, rel: str, data: dict) -> None:
    path = root / "metrics" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_table_reads_each_metric_from_its_file(tmp_path: Path) -> None:
    _write(tmp_path, "evaluate/cnn_adv.json", {"test_accuracy": 0.98751})
    _write(
        tmp_path,
        "attack/strong-cnn_adv.json",
        {
            "robust_accuracy": {"strong": {"0.1": 0.95, "0.3": 0.871}, "gap": {"0.3": 0.02}},
            "min_eps": {"q1": 0.25, "median": 0.3125, "q3": None},
            "square": {"queries": 1000, "broken": {"0.1": 0, "0.3": 3}},
            "standard": {"robust_accuracy": {"0.3": 0.866}, "gap": {"0.3": 0.005}},
        },
    )
    _write(
        tmp_path,
        "transfer.json",
        {"success": {"class_model": {"cnn_adv": {"cnn": 0.8, "cnn_bn": 0.6, "cnn_adv": 1.0}}}},
    )
    _write(
        tmp_path,
        "attribution/cnn.json",
        {
            "best_method": {"black": "integrated_gradients", "blur": "saliency"},
            "deletion_auc": {
                "black": {"saliency": 0.2, "integrated_gradients": 0.05, "random": 0.6},
                "blur": {"saliency": 0.1, "integrated_gradients": 0.3, "random": 0.4},
            },
            "sanity_passes": {"saliency": True, "integrated_gradients": False},
            "trusted_method": "saliency",
            "trusted_deletion_auc": 0.1,
        },
    )
    rows = {line.split(" | ")[0].lstrip("| "): line for line in results.table(tmp_path).split("\n")}
    assert rows["test accuracy"].split(" | ")[1:4] == ["-", "-", "98.75%"]
    strong = rows["strong ensemble robust accuracy (`attack@strong`), eps 0.1 / 0.3"]
    strong = strong.split(" | ")
    assert strong[3] == "95.0% / 87.1%" and strong[1] == "- / -"
    gap = rows["gap PGD-40 minus strong on the strong form's images, eps 0.1 / 0.3"]
    assert gap.split(" | ")[3] == "- / 2.0%"
    square = rows["of those the gradient attacks left, Square broke (images), eps 0.1 / 0.3"]
    assert square.split(" | ")[1:4] == ["-", "-", "0 / 3 (1,000 queries)"]
    std = "AutoAttack's standard budget (APGD-T on 9 targets, Square 5,000 queries) on what the "
    std += "ensemble left, eps 0.3: robust accuracy (points below the ensemble's)"
    assert rows[std].split(" | ")[1:4] == ["-", "-", "86.6% (0.5)"]
    flips = rows["smallest eps that flips an image: median [q1, q3]"].split(" | ")[3]
    assert flips == "0.312 [0.250, -]"  # q3 null: a quarter of the images never flipped
    black = rows["deletion AUC, black fill: best method vs random order (lower is better)"]
    assert black.split(" | ")[1] == "integrated_gradients: 0.050 vs random 0.600"
    blur = rows["deletion AUC, blur fill: best method vs random order (lower is better)"]
    assert blur.split(" | ")[1] == "saliency: 0.100 vs random 0.400"
    trusted = "trusted attribution method: passes the sanity check, lowest blur-fill deletion AUC"
    assert rows[trusted].split(" | ")[1:3] == ["saliency: 0.100", "-"]
    assert rows["attribution methods failing the sanity check"].split(" | ")[1] == (
        "integrated_gradients"
    )


def test_readme_without_markers_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="lacks the markers"):
        results.readme_table("# a README with no table\n")


def test_readme_shows_the_committed_metrics() -> None:
    """README's table against the metrics committed at HEAD, not the workspace's: a
    `make repro` on another CPU moves those within noise. After a `dvc repro` meant to
    change them, regenerate with `python -m ops.results --write` and commit both."""
    readme = subprocess.run(
        ["git", "show", "HEAD:README.md"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout  # both as committed: a workspace mid-`--write` is not a release
    assert results.readme_table(readme) == results.table(REPO, rev="HEAD")


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def test_table_at_a_revision_reads_the_committed_files_not_the_workspace(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _write(tmp_path, "evaluate/cnn.json", {"test_accuracy": 0.9934})
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "metrics")
    # what a rerun on another CPU leaves in the workspace, committed nowhere
    _write(tmp_path, "evaluate/cnn.json", {"test_accuracy": 0.9929})
    _write(tmp_path, "evaluate/cnn_bn.json", {"test_accuracy": 0.9911})

    def accuracies(table: str) -> list[str]:
        row = next(line for line in table.split("\n") if line.startswith("| test accuracy |"))
        return row.split(" | ")[1:4]

    assert accuracies(results.table(tmp_path, rev="HEAD")) == ["99.34%", "-", "-"]
    assert accuracies(results.table(tmp_path)) == ["99.29%", "99.11%", "-"]
    assert results.main(["--root", str(tmp_path), "--rev", "HEAD"]) == 0
    with pytest.raises(ValueError, match="not a commit"):
        results.table(tmp_path, rev="no-such-branch")


def test_write_replaces_only_the_table_and_is_idempotent(tmp_path: Path) -> None:
    _write(tmp_path, "evaluate/cnn.json", {"test_accuracy": 0.99})
    readme = f"# title\n\n{results.BEGIN}\nold table\n{results.END}\n\nprose after\n"
    (tmp_path / "README.md").write_text(readme)
    assert results.main(["--root", str(tmp_path), "--write"]) == 0
    once = (tmp_path / "README.md").read_text()
    assert once.startswith("# title\n\n") and once.endswith(f"{results.END}\n\nprose after\n")
    assert "old table" not in once and "| test accuracy | 99.00% |" in once
    results.main(["--root", str(tmp_path), "--write"])
    assert (tmp_path / "README.md").read_text() == once
