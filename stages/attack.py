"""Stage `attack@<form>-<model>`: one form of adversarial attack on one trained CNN.

Each form is a package `mnistlab.attacks.<form>` whose `compute` returns the stage's
outputs: `class_model` (class images grown from noise), `targeted` (test images pushed
to target classes), `noise` (learned additive noise and how it transfers), `fgsm` and
`pgd` (robust accuracy vs eps), `strong` (PGD-40 + APGD ensemble, minimal eps). Only the
form's own package is imported, so editing one form reruns that form's stages alone.
Reads: seed, device, attacks.<form>.
"""

from __future__ import annotations

import importlib
import logging

from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.core.outputs import write_outputs
from mnistlab.core.params_types import ATTACK_FORMS
from mnistlab.core.runtime import set_seeds, stage_main
from mnistlab.core.stage import model_stage, torch_sections
from mnistlab.core.tracking import stage_run

# The one dynamic import; the dependency test formats it with the stage's --form.
FORM_PACKAGE = "mnistlab.attacks.{form}"

log = logging.getLogger("mnistlab.attack")


@stage_main
def main(argv: list[str] | None = None) -> None:
    s = model_stage(
        __doc__,
        argv,
        form=f"one of {', '.join(ATTACK_FORMS)}",
        metrics="metrics JSON",
        rows="CSV for dvc plots",
        figures="figure directory",
        arrays=".npz of the images the attack made",
    )
    p, a = s.params, s.args
    if a.form not in ATTACK_FORMS:
        raise SystemExit(f"--form: unknown attack form {a.form!r}")
    form = importlib.import_module(FORM_PACKAGE.format(form=a.form))
    stage = f"attack@{a.form}-{a.model}"
    section = {f"attacks.{a.form}": getattr(p.attacks, a.form)}
    with stage_run(stage, torch_sections(p, section)) as run:
        out = form.compute(
            AttackInputs(s.model, (s.images, s.labels), p, set_seeds(p.seed), s.device)
        )
        log.info(
            "%s: %s", stage, {k: v for k, v in out.metrics.items() if isinstance(v, (int, float))}
        )
        write_outputs(out, run, metrics=a.metrics, rows=a.rows, figures=a.figures, arrays=a.arrays)


if __name__ == "__main__":
    main()
