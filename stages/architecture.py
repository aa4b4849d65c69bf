"""Stage `architecture@<model>`: layer shapes, parameter and neuron counts of one model.

Reads models.<model> (its architecture and keyword arguments) and no data: the counts
come from the model code alone.
Writes: the metrics JSON and a Markdown table of the layers.
"""

from __future__ import annotations

from mnistlab.architecture import describe, markdown_table
from mnistlab.core.cli import parse_args
from mnistlab.core.config import load_params
from mnistlab.core.files import write_json, write_text
from mnistlab.core.models import build_model
from mnistlab.harness.runtime import apply_threads, stage_main
from mnistlab.harness.tracking import stage_run


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__, argv, model="model name", metrics="metrics JSON", table="Markdown table"
    )
    params = load_params()
    apply_threads(params.threads)
    spec = params.model(args.model)
    arch = {"arch": spec.arch, "arch_args": spec.arch_args}
    with stage_run(f"architecture@{args.model}", {f"models.{args.model}": arch}) as run:
        info = describe(build_model(spec.arch, spec.arch_args))
        write_json(args.metrics, info)
        write_text(args.table, markdown_table(args.model, info))
        run.log_metrics({k: v for k, v in info.items() if k != "layers"})
        run.log_artifacts([args.table], "tables")


if __name__ == "__main__":
    main()
