"""Stage `evaluate@<model>`: score a trained model on the MNIST test set.

Reads: seed, device, evaluate.*. Writes: test metrics (accuracy, loss, per-class
accuracy, the 6 random predictions, the worst mistakes), the confusion pairs CSV
for `dvc plots`, and the figures.
"""

from __future__ import annotations

from functools import partial

from mnistlab import evaluate
from mnistlab.core.cli import parse_args
from mnistlab.core.config import load_params
from mnistlab.core.stage import MODEL_OPTIONS, model_inputs, run_model_stage
from mnistlab.harness.runner import torch_run
from mnistlab.harness.runtime import apply_threads, stage_main

OUTPUTS = {
    "metrics": "metrics JSON",
    "rows": "CSV of (actual, predicted)",
    "figures": "figure directory",
}


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, **MODEL_OPTIONS, **OUTPUTS)
    params = load_params()
    apply_threads(params.threads)  # before any torch work
    s = model_inputs(args, params)
    run_model_stage(
        "evaluate",
        evaluate.compute,
        s,
        partial(torch_run, params),
        link_model=True,
        outputs=tuple(OUTPUTS),
    )


if __name__ == "__main__":
    main()
