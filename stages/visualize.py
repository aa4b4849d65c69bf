"""Stage `visualize@<model>`: what a trained model learned (the study's part 2).

Reads: seed, device, visualize.*. Writes: the filter grids of every conv layer the model
has and their feature maps for one seeded test image (for a model without convolutions:
none, and the metrics say so), occlusion maps for seeded test images (figures, and the
raw maps as arrays for later stages), and per-image occlusion metrics.
"""

from __future__ import annotations

from functools import partial

from mnistlab import visualize
from mnistlab.core.cli import parse_args
from mnistlab.core.config import load_params
from mnistlab.core.stage import MODEL_OPTIONS, model_inputs, run_model_stage
from mnistlab.harness.runner import torch_run
from mnistlab.harness.runtime import apply_threads, stage_main

OUTPUTS = {
    "metrics": "metrics JSON",
    "figures": "figure directory",
    "arrays": ".npz of the occlusion maps and filters",
}


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, **MODEL_OPTIONS, **OUTPUTS)
    params = load_params()
    apply_threads(params.threads)  # before any torch work
    s = model_inputs(args, params)
    run_model_stage(
        "visualize", visualize.compute, s, partial(torch_run, params), outputs=tuple(OUTPUTS)
    )


if __name__ == "__main__":
    main()
