"""One shape for what a stage produces, and one way to write and log it.

A stage's library function returns a :class:`StageOutputs`; the entry point hands it
to :func:`write_outputs` with the paths from ``dvc.yaml``. Every file is written
atomically (temp file + rename), then the same metrics and figures are logged to
the stage's MLflow run, and its headline numbers (:func:`headline_metrics`) to the
pipeline's parent run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistlab.core.files import atomic_dir, write_csv, write_json, write_npz
from mnistlab.core.runtime import mark_outputs_written

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mnistlab.core.tracking import StageRun


@dataclasses.dataclass
class StageOutputs:
    """What one stage (or one attack form) computed.

    Attributes:
        metrics: the metrics JSON (nested dicts of numbers, lists, strings).
        rows: the CSV series for ``dvc plots`` (one dict per row).
        figures: ``{name: Figure}``, saved as ``<name>.png`` in the figures directory.
        arrays: ``{name: array}`` for later stages, saved as one ``.npz``.
        series: MLflow step series ``{name: (steps, values)}`` (e.g. training loss).
        tables: further CSV series ``{name: rows}``, for stages with more than one plot.
    """

    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    figures: dict[str, Figure] = dataclasses.field(default_factory=dict)
    arrays: dict[str, Any] = dataclasses.field(default_factory=dict)
    series: dict[str, tuple[list[int], list[float]]] = dataclasses.field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)


# Robust accuracy is summarised on the parent run at these eps (when the grid has them).
HEADLINE_EPS = ("0.1", "0.3")
HEADLINE_FORMS = ("pgd", "strong")


def headline_metrics(stage: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """The few numbers of a stage worth seeing on its pipeline's parent run.

    ``evaluate@<m>`` gives ``test_accuracy.<m>``; ``attack@pgd-<m>`` and
    ``attack@strong-<m>`` give ``robust_accuracy.<form>.<m>.<eps>`` at eps 0.1 and 0.3;
    other stages give nothing.
    """
    kind, _, item = stage.partition("@")
    if kind == "evaluate" and isinstance(metrics.get("test_accuracy"), (int, float)):
        return {f"test_accuracy.{item}": float(metrics["test_accuracy"])}
    form, _, model = item.partition("-")
    if kind != "attack" or form not in HEADLINE_FORMS:
        return {}
    curve = metrics.get("robust_accuracy", {})
    if form == "strong":
        curve = curve.get("strong", {})  # the worst case over the ensemble
    return {
        f"robust_accuracy.{form}.{model}.{eps}": float(curve[eps])
        for eps in HEADLINE_EPS
        if isinstance(curve.get(eps), (int, float))
    }


def write_outputs(
    out: StageOutputs,
    run: StageRun | None,
    *,
    metrics: str | Path | None = None,
    rows: str | Path | None = None,
    figures: str | Path | None = None,
    arrays: str | Path | None = None,
    tables: dict[str, str | Path] | None = None,
) -> None:
    """Write each non-empty part of ``out`` to its path, then log it to ``run``.

    Raises:
        ValueError: a part has content but no path (or a path but no content), which
            would silently drop an output or leave a declared one unwritten.
    """
    from mnistlab.core.figures import save_figure

    parts = {
        "metrics": (out.metrics, metrics),
        "rows": (out.rows, rows),
        "figures": (out.figures, figures),
        "arrays": (out.arrays, arrays),
    }
    tables = tables or {}
    if set(tables) != set(out.tables):
        raise ValueError(f"stage tables {sorted(out.tables)} but paths for {sorted(tables)}")
    for name, (content, path) in parts.items():
        if bool(content) != (path is not None):
            raise ValueError(f"stage output {name!r}: content and path must come together")
    if metrics is not None:
        write_json(metrics, out.metrics)
    if rows is not None:
        write_csv(rows, out.rows)
    for name, path in tables.items():
        write_csv(path, out.tables[name])
    if figures is not None:
        with atomic_dir(figures) as tmp:
            for name, fig in out.figures.items():
                save_figure(fig, Path(tmp) / f"{name}.png")
    if arrays is not None:
        write_npz(arrays, out.arrays)
    mark_outputs_written()  # from here on a failure must say the outputs were replaced
    if run is not None:
        run.log_metrics(out.metrics)
        run.log_summary(headline_metrics(run.stage, out.metrics))
        for name, (steps, values) in out.series.items():
            run.log_series(name, steps, values)
        if figures is not None:
            run.log_artifacts([figures], "figures")
