"""Stage `transfer`: adversarial examples crafted on one model, scored on every model.

For the class images, targeted and learned-noise attacks it reuses the images the
attack stages saved; PGD examples are crafted here at `transfer.pgd_eps`. Reads: seed, device,
transfer.*, attacks.pgd (steps, step size, random start). Writes: a success matrix
per form (rows: crafted on, columns: scored on) and a heatmap figure; the class images'
three judges (training-digit kNN and distance from the class_model arrays, the other
models' reading from the matrices) and the seeded class images side by side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnistlab import transfer
from mnistlab.core.cli import parse_args, resolve_device
from mnistlab.core.config import load_params
from mnistlab.core.mnist import load_mnist
from mnistlab.core.models import load_checkpoint
from mnistlab.core.outputs import write_outputs
from mnistlab.core.params_types import MODEL_NAMES
from mnistlab.core.tensors import set_seeds
from mnistlab.harness.runner import torch_run
from mnistlab.harness.runtime import apply_threads, stage_main


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        data="raw MNIST directory",
        models_dir="holds <model>.pt",
        arrays_dir="holds <form>-<model>.npz",
        metrics="metrics JSON",
        figures="figure directory",
    )
    params = load_params()
    apply_threads(params.threads)  # before any torch work
    device = resolve_device(params.device)
    models = {
        m: load_checkpoint(Path(args.models_dir) / f"{m}.pt", expected=m, device=device)[0]
        for m in MODEL_NAMES
    }
    test = load_mnist(args.data, "test")
    arrays = {}
    for form in ("class_model", "targeted", "noise"):
        for m in MODEL_NAMES:
            with np.load(Path(args.arrays_dir) / f"{form}-{m}.npz") as f:
                arrays[form, m] = dict(f)

    sections = {"transfer": params.transfer, "attacks.pgd": params.attacks.pgd}
    with torch_run(params, "transfer", sections) as run:
        gen = set_seeds(params.seed)
        out = transfer.compute(models, arrays, test, params=params, gen=gen, device=device)
        write_outputs(out, metrics=args.metrics, figures=args.figures)
        run.log_outputs(out, figures=args.figures)


if __name__ == "__main__":
    main()
