"""Stage `transfer`: adversarial examples crafted on one model, scored on every model.

Every model of params.yaml (`<models-dir>/<model>.pt`), in its order, against every
transfer set an attack form saved (`<arrays-dir>/<form>-<model>.npz`, the contract in
`mnistlab.transfer`: class_model, targeted and noise write theirs; a form with none, such
as fgsm, adds nothing); PGD examples are crafted here at `transfer.pgd_eps`. Reads:
seed, device, transfer.*, attacks.pgd (steps, step size, random start, batch size), the
names of models and attacks. Writes: a success matrix per set (rows: crafted on,
columns: scored on) and a heatmap figure; the class images' three judges (training-digit
kNN and distance from the class_model arrays, the other models' reading from the
matrices) and the seeded class images side by side.
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
from mnistlab.core.tensors import set_seeds
from mnistlab.harness.runner import torch_run
from mnistlab.harness.runtime import apply_threads, stage_main


def load_sets(arrays_dir: Path, forms: list[str], models: list[str]) -> dict:
    """``{(form, model): arrays}`` of the forms that write transfer sets, in params order.

    A file is read whole only when it names a ``transfer.*`` array (``np.load`` lists
    the members without reading them): the strong form's masks stay on disk.
    """
    out = {}
    for form in forms:
        for m in models:
            with np.load(arrays_dir / f"{form}-{m}.npz") as f:
                if not transfer.writes_sets(f.files):
                    continue
                out[form, m] = dict(f)
    return out


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
    names = list(params.models)
    models = {
        m: load_checkpoint(Path(args.models_dir) / f"{m}.pt", expected=m, device=device)[0]
        for m in names
    }
    test = load_mnist(args.data, "test")
    arrays = load_sets(Path(args.arrays_dir), list(params.attacks), names)

    sections = {"transfer": params.transfer}
    if transfer.PGD in params.attacks:
        sections["attacks.pgd"] = params.attacks.pgd
    with torch_run(params, "transfer", sections) as run:
        gen = set_seeds(params.seed)
        out = transfer.compute(models, arrays, test, params=params, gen=gen, device=device)
        write_outputs(out, metrics=args.metrics, figures=args.figures)
        run.log_outputs(out, figures=args.figures)


if __name__ == "__main__":
    main()
