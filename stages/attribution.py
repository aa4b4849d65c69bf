"""Stage `attribution@<model>`: saliency, Integrated Gradients, Grad-CAM and occlusion on
seeded test images, their deletion/insertion curves and the model-randomisation check.

Reads: seed, device, attribution.*. Writes: the attribution figures, the curves and
sanity-check CSVs for `dvc plots`, the maps as arrays, and the metrics.
"""

from __future__ import annotations

from mnistlab import attribution
from mnistlab.core.runtime import stage_main
from mnistlab.core.stage import run_model_stage


@stage_main
def main(argv: list[str] | None = None) -> None:
    run_model_stage(
        "attribution",
        attribution.compute,
        __doc__,
        argv,
        tables=("sanity",),
        metrics="metrics JSON",
        rows="CSV of the deletion curves",
        sanity="CSV of the sanity check",
        figures="figure directory",
        arrays=".npz of the attribution maps",
    )


if __name__ == "__main__":
    main()
