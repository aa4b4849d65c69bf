"""The ``report`` stage: one self-contained HTML page answering the study's questions,
our numbers beside the reference report's, and what the study adds beyond it.

The page is rendered from ``template.html.j2`` (Jinja2) for the models and attack forms
of ``params.yaml``, in its order: nothing here lists them. The sections answering the
reference report's questions read the study's attack forms where they run; any other form
gets a generic section (its metrics table and every figure it drew). Figures are embedded
as base64 PNGs, looked up through the figure registry
(:data:`mnistlab.report.registry.FIGURES`); a missing figure is an error, never a
placeholder, unless the stage's metrics say it does not apply (``not_applicable``), which
the page then says in its place.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnistlab.core.errors import MnistlabError
from mnistlab.report.registry import FIGURES, absent_figures, patterns

# What the reference course report measured (EE6132 assignment 2, 2019), for its models:
# the study's plain CNN and the same with BatchNorm.
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


class ReportError(MnistlabError):
    """A figure or metrics file the report needs is missing."""


def load_metrics(metrics_dir: Path) -> dict[str, Any]:
    """Every metrics JSON under ``metrics_dir``, keyed by relative path without suffix."""
    return {
        str(p.relative_to(metrics_dir).with_suffix("")): json.loads(p.read_text())
        for p in sorted(metrics_dir.rglob("*.json"))
    }


class Figures:
    """Embeds registered figures from ``plots/``; an unknown or missing one is an error,
    unless the metrics of the stage that draws it say it does not apply."""

    def __init__(self, plots: Path, metrics: Mapping[str, Any] | None = None) -> None:
        self.plots = plots
        self.metrics = metrics or {}
        self.used: set[Path] = set()

    def __call__(self, kind: str, item: str | None, name: str) -> str:
        """``data:`` URI of ``plots/<stage>/<item>/<name>.png`` for a registered figure."""
        if not any(fnmatch.fnmatch(name, p) for p in patterns(kind)):
            raise ReportError(f"report: figure {name!r} is not registered for {kind}")
        path = self._folder(kind, item) / f"{name}.png"
        if not path.is_file():
            raise ReportError(f"report: missing figure {path} (rerun: dvc repro)")
        self.used.add(path)
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")

    def _folder(self, kind: str, item: str | None) -> Path:
        stage = kind.split("/")[0]
        return self.plots / stage if item is None else self.plots / stage / item

    def not_applicable(self, kind: str, item: str | None, name: str) -> str | None:
        """Why figure ``name`` was not drawn, from its stage's ``not_applicable`` metrics
        (``metrics/<stage>[/<item>].json``); ``None`` when it applies."""
        stage = kind.split("/")[0]
        key = stage if item is None else f"{stage}/{item}"
        entry = self.metrics.get(key, {}).get("not_applicable")
        return absent_figures(kind, entry).get(name)

    def matching(self, kind: str, item: str, pattern: str) -> list[str]:
        """Names of the figures in ``plots/<stage>/<item>`` matching a registry pattern."""
        folder = self._folder(kind, item)
        names = sorted(p.stem for p in folder.glob("*.png") if fnmatch.fnmatch(p.stem, pattern))
        if not names:
            raise ReportError(f"report: no figure {pattern!r} in {folder} (rerun: dvc repro)")
        return names

    def every(self, kind: str, item: str) -> list[str]:
        """Every figure in ``plots/<stage>/<item>``, sorted: a form the template does not
        know shows all it drew (possibly none)."""
        return sorted(p.stem for p in self._folder(kind, item).glob("*.png"))


def pct(x: float | None) -> str:
    """``0.9937`` -> ``99.37%``; a missing value -> an en dash."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def num(x: float | int | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    return f"{x:,}" if isinstance(x, int) else f"{x:.{digits}g}"


def known_forms() -> set[str]:
    """The attack forms the template has sections for: those with registered figures."""
    return {kind.split("/", 1)[1] for kind in FIGURES if kind.startswith("attack/")}


def curve_forms(forms: Sequence[str]) -> list[str]:
    """The forms that draw a robust-accuracy curve (registered figure ``robustness``):
    one table of robust accuracy against eps holds them all."""
    return [f for f in forms if FIGURES.get(f"attack/{f}") == ("robustness",)]


def deeper_filters(names: Sequence[str]) -> list[tuple[str, str]]:
    """``[(figure, caption)]`` of the filter figures of the conv layers after the first
    (``conv<k>_filters_channel0`` and ``_all``, as many layers as the model has), in
    layer order: conv10 after conv9."""
    found = []
    for name in names:
        match = re.fullmatch(r"conv(\d+)_filters_(channel0|all)", name)
        if match:
            layer, which = f"conv{match[1]}", match[2]
            caption = (
                f"{layer} filters, input channel 0"
                if which == "channel0"
                else f"all {layer} filters"
            )
            found.append(((int(match[1]), which != "channel0"), name, caption))
    return [(name, caption) for _, name, caption in sorted(found)]


def success_forms(
    metrics: Mapping[str, Any], forms: Sequence[str], models: Sequence[str]
) -> list[str]:
    """The forms whose every model's metrics hold a ``success_rate`` and a
    ``mean_confidence`` (the class images, the targeted attack, the learned noise, and any
    new form that reports the same): one table sets them side by side."""

    def has(form: str, model: str) -> bool:
        r = metrics.get(f"attack/{form}-{model}", {})
        return all(isinstance(r.get(k), (int, float)) for k in ("success_rate", "mean_confidence"))

    return [f for f in forms if all(has(f, m) for m in models)]


def attribution_methods(metrics: Mapping[str, Any], models: Sequence[str]) -> list[str]:
    """Every attribution method any model ranked, sorted: the tables' columns (a model
    without one, Grad-CAM without a conv layer, says "not applicable" there)."""
    found = set()
    for name in models:
        a = metrics[f"attribution/{name}"]
        found.update(a["ranking"][a["trusted_fill"]])
    return sorted(found)


def not_applicable(stage_metrics: Mapping[str, Any], key: str) -> str:
    """``not applicable: <reason>`` for a piece a stage left out (its ``not_applicable``
    entry, else a plain "not computed")."""
    why = stage_metrics.get("not_applicable", {}).get(key, "not computed for this model")
    return f"not applicable: {why}"


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def form_table(
    metrics: Mapping[str, Any], form: str, models: Sequence[str]
) -> tuple[list[str], dict[str, dict[str, float]]]:
    """``(columns, {model: {metric: value}})``: a form's numeric metrics per model, from
    the compare stage's table (or, for a form it lacks, the attack metrics themselves)."""
    table = metrics.get("compare", {}).get("forms", {}).get(form)
    if table is None:
        table = {m: _scalars(metrics.get(f"attack/{form}-{m}", {})) for m in models}
    columns = list(dict.fromkeys(k for m in models for k in table.get(m, {})))
    return columns, {m: table.get(m, {}) for m in models}


def required_metrics(models: Sequence[str]) -> list[str]:
    return ["transfer", "compare", *(f"evaluate/{m}" for m in models)]


def render(
    metrics: dict[str, Any],
    plots: Path,
    *,
    models: Sequence[str],
    labels: Mapping[str, str],
    forms: Sequence[str],
) -> str:
    """The report page for ``metrics`` (from :func:`load_metrics`) and the figures in ``plots``.

    Args:
        models: the study's models, in ``params.yaml``'s order (rows and columns).
        labels: how the page names each model (``Params.label``).
        forms: the attack forms of ``params.yaml``, in its order.

    Raises:
        ReportError: a figure or a metrics file the page shows is missing.
    """
    import jinja2

    for key in required_metrics(models):
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
    known = known_forms()
    return env.get_template("template.html.j2").render(
        m=metrics,
        models=list(models),
        labels=dict(labels),
        forms=list(forms),
        extra_forms=[f for f in forms if f not in known],
        curve_forms=curve_forms(forms),
        success_forms=success_forms(metrics, forms, models),
        deeper_filters=deeper_filters,
        methods=attribution_methods(metrics, models),
        form_table=form_table,
        na=not_applicable,
        ref=REFERENCE,
        anchors=ANCHORS,
        fig=Figures(plots, metrics),
    )
