"""Stage `compare`: every model side by side (what robustness changes, what each looks at).

Reads: the names of models and attacks, attacks.strong.min_eps.hi (when the strong form
runs). Writes: cross-model figures from the arrays the strong and class_model attack
stages (when those forms run), the visualize and the attribution stages saved, the
minimal-eps medians; and for every attack form a table of each model's numeric metrics
(from `<attack-metrics-dir>/<form>-<model>.json`) with its figure. What does not apply
(a form not run, a model without conv1 filters) is listed under `not_applicable`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mnistlab import compare
from mnistlab.core.cli import parse_args
from mnistlab.core.config import load_params
from mnistlab.core.outputs import write_outputs
from mnistlab.harness.runtime import stage_main
from mnistlab.harness.tracking import stage_run

# Which saved arrays the figures read: kind -> path under --arrays-dir, per model. The
# attack forms' kinds are read only when the form is in params.yaml.
SOURCES = {
    compare.STRONG: "attack/strong-{m}.npz",
    compare.CLASS_MODEL: "attack/class_model-{m}.npz",
    compare.VISUALIZE: "visualize/{m}.npz",
    compare.ATTRIBUTION: "attribution/{m}.npz",
}
FORM_KINDS = (compare.STRONG, compare.CLASS_MODEL)


def load_arrays(arrays_dir: Path, models: list[str], forms: list[str]) -> dict:
    """``{kind: {model: arrays}}`` of every kind whose stages run in this study."""
    out = {}
    for kind, pattern in SOURCES.items():
        if kind in FORM_KINDS and kind not in forms:
            continue
        out[kind] = {}
        for m in models:
            with np.load(arrays_dir / pattern.format(m=m)) as f:
                out[kind][m] = dict(f)
    return out


def load_attack_metrics(metrics_dir: Path, models: list[str], forms: list[str]) -> dict:
    """``{form: {model: metrics JSON}}`` of every attack stage of the study."""
    return {
        form: {m: json.loads((metrics_dir / f"{form}-{m}.json").read_text()) for m in models}
        for form in forms
    }


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        arrays_dir="the artifacts directory",
        attack_metrics_dir="holds the attack stages' <form>-<model>.json",
        metrics="metrics JSON",
        figures="figure directory",
    )
    params = load_params()
    models, forms = list(params.models), list(params.attacks)
    arrays = load_arrays(Path(args.arrays_dir), models, forms)
    attack_metrics = load_attack_metrics(Path(args.attack_metrics_dir), models, forms)
    hi = params.attacks.strong.min_eps.hi if compare.STRONG in forms else None
    logged = {} if hi is None else {"attacks.strong.min_eps.hi": hi}
    with stage_run("compare", logged) as run:
        out = compare.compute(arrays, models=models, hi=hi, attack_metrics=attack_metrics)
        write_outputs(out, metrics=args.metrics, figures=args.figures)
        run.log_outputs(out, figures=args.figures)


if __name__ == "__main__":
    main()
