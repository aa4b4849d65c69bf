"""Stage `report`: one self-contained HTML page organised by the study's questions.

Reads the names of models and attacks and each model's label (the page's rows, columns
and sections, in params.yaml's order). Writes report/index.html from every metrics JSON
and registered figure; a missing figure or metrics file fails the stage in one line,
unless its stage's metrics say it does not apply.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mnistlab import report
from mnistlab.core.cli import parse_args
from mnistlab.core.config import load_params
from mnistlab.core.files import atomic_dir
from mnistlab.harness.runtime import stage_main
from mnistlab.harness.tracking import stage_run

log = logging.getLogger("mnistlab.report")


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        metrics_dir="metrics directory",
        plots_dir="plots directory",
        out="directory that gets index.html",
    )
    params = load_params()
    page = report.render(
        report.load_metrics(Path(args.metrics_dir)),
        Path(args.plots_dir),
        models=list(params.models),
        labels={m: params.label(m) for m in params.models},
        forms=list(params.attacks),
    )
    with stage_run("report", {}) as run:
        with atomic_dir(args.out) as tmp:
            (Path(tmp) / "index.html").write_text(page)
        log.info("report: %s/index.html (%d kB)", args.out, len(page) // 1024)
        run.log_artifacts([Path(args.out) / "index.html"], "report")


if __name__ == "__main__":
    main()
