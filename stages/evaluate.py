"""Stage `evaluate@<model>`: score a trained CNN on the MNIST test set.

Reads: seed, device, evaluate.*. Writes: test metrics (accuracy, loss, per-class
accuracy, the 6 random predictions, the worst mistakes), the confusion pairs CSV
for `dvc plots`, and the figures.
"""

from __future__ import annotations

from mnistlab import evaluate
from mnistlab.core.runtime import stage_main
from mnistlab.core.stage import run_model_stage


@stage_main
def main(argv: list[str] | None = None) -> None:
    run_model_stage(
        "evaluate",
        evaluate.compute,
        __doc__,
        argv,
        link_model=True,
        metrics="metrics JSON",
        rows="CSV of (actual, predicted)",
        figures="figure directory",
    )


if __name__ == "__main__":
    main()
