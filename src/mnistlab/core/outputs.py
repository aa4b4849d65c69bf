"""One shape for what a stage produces, and one way to write it.

A stage's library function returns a :class:`StageOutputs`; the entry point hands it
to :func:`write_outputs` with the paths from ``dvc.yaml``. Every file is written
atomically (temp file + rename). Logging the same outputs to MLflow is the harness's
job (``StageRun.log_outputs``), after they are written: it changes no byte here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistlab.core.files import atomic_dir, write_csv, write_json, write_npz

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The arrays an attack form hands the transfer stage start with this (the contract is in
# mnistlab.transfer); the attack stage writes them to a file of their own.
TRANSFER_PREFIX = "transfer."


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


def write_outputs(
    out: StageOutputs,
    *,
    metrics: str | Path | None = None,
    rows: str | Path | None = None,
    figures: str | Path | None = None,
    arrays: str | Path | None = None,
    tables: dict[str, str | Path] | None = None,
) -> None:
    """Write each non-empty part of ``out`` to its path.

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
