"""Stage `evaluate@<model>`: score a trained CNN on the MNIST test set.

Reads: seed, device, evaluate.*. Writes: test metrics (accuracy, loss, per-class
accuracy, the 6 random predictions, the worst mistakes), the confusion pairs CSV
for `dvc plots`, and the figures.
"""

from __future__ import annotations

from mnistlab import evaluate
from mnistlab.core.config import load_params
from mnistlab.core.mnist import load_mnist
from mnistlab.core.models import load_checkpoint
from mnistlab.core.outputs import write_outputs
from mnistlab.core.runtime import parse_args, resolve_device, stage_main
from mnistlab.core.tracking import stage_run


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        model="model name",
        data="raw MNIST directory",
        checkpoint="checkpoint file",
        metrics="metrics JSON",
        rows="CSV of (actual, predicted) pairs",
        figures="figure directory",
    )
    params = load_params()
    device = resolve_device(params.device)
    model, _ = load_checkpoint(args.checkpoint, expected=args.model, device=device)
    images, labels = load_mnist(args.data, "test")

    sections = {"seed": params.seed, "device": params.device, "evaluate": params.evaluate}
    with stage_run(f"evaluate@{args.model}", sections) as run:
        out = evaluate.compute(
            model,
            images,
            labels,
            name=args.model,
            cfg=params.evaluate,
            seed=params.seed,
            device=device,
        )
        write_outputs(out, run, metrics=args.metrics, rows=args.rows, figures=args.figures)


if __name__ == "__main__":
    main()
