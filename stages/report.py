"""Stage `report`: one self-contained HTML page organised by the study's questions.

Reads no params. Writes report/index.html from every metrics JSON and figure.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mnistlab import report
from mnistlab.core.config import load_params
from mnistlab.core.files import atomic_dir
from mnistlab.core.runtime import stage_main
from mnistlab.core.tracking import stage_run

log = logging.getLogger("mnistlab.report")


@stage_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--metrics-dir", required=True)
    p.add_argument("--plots-dir", required=True)
    p.add_argument("--out", required=True, help="directory that gets index.html")
    args = p.parse_args(argv)
    load_params()
    with stage_run("report", {}) as run:
        page = report.build(report.load_metrics(Path(args.metrics_dir)), Path(args.plots_dir))
        with atomic_dir(args.out) as tmp:
            (Path(tmp) / "index.html").write_text(page)
        log.info("report: %s/index.html (%d kB)", args.out, len(page) // 1024)
        run.log_artifacts([Path(args.out) / "index.html"], "report")


if __name__ == "__main__":
    main()
