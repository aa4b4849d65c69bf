"""Stage `compare`: every model side by side (what robustness changes, what each looks at).

Reads: attacks.strong.min_eps.hi. Writes: cross-model figures from the arrays the
strong, class_model, visualize and attribution stages saved, and minimal-eps medians.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnistlab import compare
from mnistlab.core.cli import parse_args
from mnistlab.core.config import load_params
from mnistlab.core.outputs import write_outputs
from mnistlab.core.params_types import MODEL_NAMES
from mnistlab.harness.runtime import stage_main
from mnistlab.harness.tracking import stage_run

# Which saved arrays the figures read: kind -> path under --arrays-dir, per model.
SOURCES = {
    "strong": "attack/strong-{m}.npz",
    "class_model": "attack/class_model-{m}.npz",
    "visualize": "visualize/{m}.npz",
    "attribution": "attribution/{m}.npz",
}


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        arrays_dir="the artifacts directory",
        metrics="metrics JSON",
        figures="figure directory",
    )
    params = load_params()
    arrays = {}
    for kind, pattern in SOURCES.items():
        arrays[kind] = {}
        for m in MODEL_NAMES:
            with np.load(Path(args.arrays_dir) / pattern.format(m=m)) as f:
                arrays[kind][m] = dict(f)
    hi = params.attacks.strong.min_eps.hi
    with stage_run("compare", {"attacks.strong.min_eps.hi": hi}) as run:
        out = compare.compute(arrays, hi=hi)
        write_outputs(out, metrics=args.metrics, figures=args.figures)
        run.log_outputs(out, figures=args.figures)


if __name__ == "__main__":
    main()
