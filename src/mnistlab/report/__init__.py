"""The ``report`` stage: one self-contained HTML page answering the study's questions,
our numbers beside the reference report's, and what the study adds beyond it.

The page is rendered from ``template.html.j2`` (Jinja2). Figures are embedded as
base64 PNGs, looked up through the figure registry (:data:`mnistlab.report.registry.FIGURES`);
a missing figure is an error, never a placeholder.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import math
from pathlib import Path
from typing import Any

from mnistlab.core.errors import MnistlabError
from mnistlab.core.params_types import MODEL_NAMES
from mnistlab.report.registry import FIGURES

# What the reference course report measured (EE6132 assignment 2, 2019).
REFERENCE = {
    "test_accuracy": {"cnn": 0.9796, "cnn_bn": 0.9923},
    "total_params": 799_078,
    "conv_params": 9_568,
    "fc_params": 789_510,
    "total_neurons": 574,
    "bn_time_ratio": 2.0,
}

# Published L-inf eps 0.3 robust accuracies on MNIST (AutoAttack's table; Madry's board).
ANCHORS = [
    ("Madry et al. 2018 (PGD training, larger net), AutoAttack", 0.885),
    ("Madry et al., own leaderboard: PGD-100 x 50 restarts", 0.896),
    ("Wong et al. 2020 (FGSM + random start), AutoAttack", 0.829),
    ("TRADES (Zhang et al. 2019), AutoAttack", 0.928),
]

LABELS = {"cnn": "plain CNN", "cnn_bn": "CNN + BatchNorm", "cnn_adv": "adversarially trained CNN"}


class ReportError(MnistlabError):
    """A figure or metrics file the report needs is missing."""


def load_metrics(metrics_dir: Path) -> dict[str, Any]:
    """Every metrics JSON under ``metrics_dir``, keyed by relative path without suffix."""
    return {
        str(p.relative_to(metrics_dir).with_suffix("")): json.loads(p.read_text())
        for p in sorted(metrics_dir.rglob("*.json"))
    }


class Figures:
    """Embeds registered figures from ``plots/``; an unknown or missing one is an error."""

    def __init__(self, plots: Path) -> None:
        self.plots = plots
        self.used: set[Path] = set()

    def __call__(self, kind: str, item: str | None, name: str) -> str:
        """``data:`` URI of ``plots/<stage>/<item>/<name>.png`` for a registered figure."""
        if not any(fnmatch.fnmatch(name, p) for p in FIGURES[kind]):
            raise ReportError(f"report: figure {name!r} is not registered for {kind}")
        stage = kind.split("/")[0]
        folder = self.plots / stage if item is None else self.plots / stage / item
        path = folder / f"{name}.png"
        if not path.is_file():
            raise ReportError(f"report: missing figure {path} (rerun: dvc repro)")
        self.used.add(path)
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")

    def matching(self, kind: str, item: str, pattern: str) -> list[str]:
        """Names of the figures in ``plots/<stage>/<item>`` matching a registry pattern."""
        folder = self.plots / kind.split("/")[0] / item
        names = sorted(p.stem for p in folder.glob("*.png") if fnmatch.fnmatch(p.stem, pattern))
        if not names:
            raise ReportError(f"report: no figure {pattern!r} in {folder} (rerun: dvc repro)")
        return names


def pct(x: float | None) -> str:
    """``0.9937`` -> ``99.37%``; a missing value -> an en dash."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def num(x: float | int | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    return f"{x:,}" if isinstance(x, int) else f"{x:.{digits}g}"


def render(metrics: dict[str, Any], plots: Path) -> str:
    """The report page for ``metrics`` (from :func:`load_metrics`) and the figures in ``plots``.

    Raises:
        ReportError: a figure or a metrics file the page shows is missing.
    """
    import jinja2

    for key in ("transfer", "compare", *(f"evaluate/{m}" for m in MODEL_NAMES)):
        if key not in metrics:
            raise ReportError(f"report: missing metrics/{key}.json (rerun: dvc repro)")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=pct, num=num)
    return env.get_template("template.html.j2").render(
        m=metrics,
        models=list(MODEL_NAMES),
        labels=LABELS,
        ref=REFERENCE,
        anchors=ANCHORS,
        fig=Figures(plots),
    )
