"""Stage `attack@<form>-<model>`: one form of adversarial attack on one trained CNN.

Each form is a package `mnistlab.attacks.<form>` whose `compute` returns the stage's
outputs: `class_model` (class images grown from noise), `targeted` (test images pushed
to target classes), `noise` (learned additive noise and how it transfers), `fgsm` and
`pgd` (robust accuracy vs eps). Only the form's own package is imported, so editing one
form reruns that form's stages alone. Reads: seed, device, attacks.<form>.
"""

from __future__ import annotations

import importlib
import logging

from mnistlab.core.config import ATTACK_FORMS, load_params
from mnistlab.core.mnist import load_mnist
from mnistlab.core.models import load_checkpoint
from mnistlab.core.outputs import write_outputs
from mnistlab.core.runtime import parse_args, resolve_device, set_seeds, stage_main
from mnistlab.core.tracking import stage_run

# The one dynamic import; the dependency test formats it with the stage's --form.
FORM_PACKAGE = "mnistlab.attacks.{form}"

log = logging.getLogger("mnistlab.attack")


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        form=f"one of {', '.join(ATTACK_FORMS)}",
        model="model name",
        data="raw MNIST directory",
        checkpoint="checkpoint file",
        metrics="metrics JSON",
        rows="CSV for dvc plots",
        figures="figure directory",
        arrays=".npz of the images the attack made",
    )
    if args.form not in ATTACK_FORMS:
        raise SystemExit(f"--form: unknown attack form {args.form!r}")
    form = importlib.import_module(FORM_PACKAGE.format(form=args.form))
    params = load_params()
    device = resolve_device(params.device)
    model, _ = load_checkpoint(args.checkpoint, expected=args.model, device=device)
    test = load_mnist(args.data, "test")

    stage = f"attack@{args.form}-{args.model}"
    sections = {
        "seed": params.seed,
        "device": params.device,
        f"attacks.{args.form}": getattr(params.attacks, args.form),
    }
    with stage_run(stage, sections) as run:
        gen = set_seeds(params.seed)
        out = form.compute(model, test, params=params, gen=gen, device=device)
        log.info(
            "%s: %s", stage, {k: v for k, v in out.metrics.items() if isinstance(v, (int, float))}
        )
        write_outputs(
            out, run, metrics=args.metrics, rows=args.rows, figures=args.figures, arrays=args.arrays
        )


if __name__ == "__main__":
    main()
