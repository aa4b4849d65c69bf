"""Stage `attribution@<model>`: saliency, SmoothGrad, Integrated Gradients from four
baselines, Grad-CAM (on the last conv layer; not applicable without one) and occlusion
on seeded test images, their deletion/insertion curves under each fill, the
model-randomisation check and the trusted method.

Reads: seed, device, attribution.*; the training split for the mean-image baseline.
Writes: the attribution figures, the curves and sanity-check CSVs for `dvc plots`, the
maps as arrays, and the metrics.
"""

from __future__ import annotations

from functools import partial

from mnistlab import attribution
from mnistlab.attribution.baselines import mean_image
from mnistlab.core.cli import parse_args
from mnistlab.core.config import load_params
from mnistlab.core.mnist import load_mnist
from mnistlab.core.stage import MODEL_OPTIONS, model_inputs, run_model_stage
from mnistlab.harness.runner import torch_run
from mnistlab.harness.runtime import apply_threads, stage_main

OUTPUTS = {
    "metrics": "metrics JSON",
    "rows": "CSV of the deletion curves",
    "sanity": "CSV of the sanity check",
    "figures": "figure directory",
    "arrays": ".npz of the attribution maps",
}


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, **MODEL_OPTIONS, **OUTPUTS)
    params = load_params()
    apply_threads(params.threads)  # before any torch work
    s = model_inputs(args, params)
    train_images, _ = load_mnist(args.data, "train")  # MD5-verified, before the run opens
    run_model_stage(
        "attribution",
        partial(attribution.compute, mean_image=mean_image(train_images)),
        s,
        partial(torch_run, params),
        tables=("sanity",),
        outputs=tuple(OUTPUTS),
    )


if __name__ == "__main__":
    main()
