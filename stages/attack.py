"""Stage `attack@<form>-<model>`: one form of adversarial attack on one trained CNN.

Each form is a package `mnistlab.attacks.<form>` whose `compute` returns the stage's
outputs: `class_model` (class images grown from noise), `targeted` (test images pushed
to target classes), `noise` (learned additive noise and how it transfers), `fgsm` and
`pgd` (robust accuracy vs eps), `strong` (PGD-40 + APGD ensemble, minimal eps), and any
other package there (a form is a package and a params schema, nothing else). Only the
form's own package is imported, so editing one form reruns that form's stages alone.
Reads: seed, device, attacks.<form>; the test split, and the training split for the
forms that ask for it (class_model: its seeds and judges).
"""

from __future__ import annotations

import importlib
import logging

from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.core.cli import parse_args
from mnistlab.core.config import load_params
from mnistlab.core.files import write_npz
from mnistlab.core.mnist import load_mnist
from mnistlab.core.outputs import TRANSFER_PREFIX, StageOutputs, write_outputs
from mnistlab.core.stage import MODEL_OPTIONS, model_inputs
from mnistlab.core.tensors import set_seeds
from mnistlab.harness.runner import torch_run
from mnistlab.harness.runtime import apply_threads, stage_main

# The one dynamic import; the dependency test formats it with the stage's --form.
FORM_PACKAGE = "mnistlab.attacks.{form}"

log = logging.getLogger("mnistlab.attack")


def for_transfer(out: StageOutputs) -> dict:
    """What the transfer stage gets of this form: all its arrays when it writes transfer
    sets (``transfer.*``; class_model's class-image judges read its other arrays too),
    else nothing."""
    if any(k.startswith(TRANSFER_PREFIX) for k in out.arrays):
        return out.arrays
    return {}


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        **MODEL_OPTIONS,
        form="attack form",
        metrics="metrics JSON",
        rows="CSV for dvc plots",
        figures="figure directory",
        arrays=".npz of the images the attack made",
        transfer=".npz of the form's transfer sets (empty for a form without)",
    )
    params = load_params()
    params.form(args.form)  # a form of params.yaml, or one line and exit 2
    apply_threads(params.threads)  # before any torch work
    s = model_inputs(args, params)
    p, a = s.params, s.args
    form = importlib.import_module(FORM_PACKAGE.format(form=a.form))
    # The training split only for a form that asks for it, MD5-verified (like the test
    # split) before the run opens, so bad data fails in one line and records nothing.
    train = load_mnist(a.data, "train") if getattr(form, "USES_TRAIN", False) else None
    stage = f"attack@{a.form}-{a.model}"
    section = {f"attacks.{a.form}": p.form(a.form)}
    with torch_run(p, stage, section) as run:
        out = form.compute(
            AttackInputs(s.model, (s.images, s.labels), p, set_seeds(p.seed), s.device, train)
        )
        log.info(
            "%s: %s", stage, {k: v for k, v in out.metrics.items() if isinstance(v, (int, float))}
        )
        write_outputs(out, metrics=a.metrics, rows=a.rows, figures=a.figures, arrays=a.arrays)
        # A file of its own, written by every form (empty when it has no transfer set): the
        # transfer stage reads only these, so a knob of a form whose images do not transfer
        # (fgsm) leaves them byte for byte and reruns no transfer.
        write_npz(a.transfer, for_transfer(out))
        run.log_outputs(out, figures=a.figures)


if __name__ == "__main__":
    main()
