"""Stage `visualize@<model>`: what a trained CNN learned (the study's part 2).

Reads: seed, device, visualize.*. Writes: conv1/conv2 filter grids, the feature maps
of one seeded test image, occlusion maps for seeded test images (figures, and the raw
maps as arrays for later stages), and per-image occlusion metrics.
"""

from __future__ import annotations

from mnistlab import visualize
from mnistlab.core.runtime import stage_main
from mnistlab.core.stage import run_model_stage


@stage_main
def main(argv: list[str] | None = None) -> None:
    run_model_stage(
        "visualize",
        visualize.compute,
        __doc__,
        argv,
        metrics="metrics JSON",
        figures="figure directory",
        arrays=".npz of the occlusion maps and filters",
    )


if __name__ == "__main__":
    main()
