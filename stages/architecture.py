"""Stage `architecture`: layer shapes, parameter and neuron counts of every model.

Reads no params and no data: the counts come from the model code alone.
Writes: one metrics JSON and one Markdown table per model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistlab.architecture import describe, markdown_table
from mnistlab.config import MODEL_NAMES, load_params
from mnistlab.io import write_json, write_text
from mnistlab.models import build_model
from mnistlab.stage import stage_main
from mnistlab.tracking import stage_run


@stage_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--metrics-dir", required=True, help="gets <model>.json")
    p.add_argument("--tables-dir", required=True, help="gets <model>.md")
    args = p.parse_args(argv)
    load_params()  # validated like every stage, though none are read
    with stage_run("architecture", {}) as run:
        for name in MODEL_NAMES:
            info = describe(build_model(name))
            table = Path(args.tables_dir) / f"{name}.md"
            write_json(Path(args.metrics_dir) / f"{name}.json", info)
            write_text(table, markdown_table(name, info))
            run.log_metrics({name: {k: v for k, v in info.items() if k != "layers"}})
            run.log_artifacts([table], "tables")


if __name__ == "__main__":
    main()
