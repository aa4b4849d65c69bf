"""Stage `visualize@<model>`: what a trained CNN learned (the study's part 2).

Reads: seed, device, visualize.*. Writes: conv1/conv2 filter grids, the feature maps
of one seeded test image, occlusion maps for seeded test images (figures, and the raw
maps as arrays for later stages), and per-image occlusion metrics.
"""

from __future__ import annotations

from mnistlab import visualize
from mnistlab.core.config import load_params
from mnistlab.core.mnist import load_mnist
from mnistlab.core.models import load_checkpoint
from mnistlab.core.outputs import write_outputs
from mnistlab.core.runtime import parse_args, resolve_device, stage_main
from mnistlab.core.tracking import stage_run


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        model="model name",
        data="raw MNIST directory",
        checkpoint="checkpoint file",
        metrics="metrics JSON",
        figures="figure directory",
        arrays=".npz of the raw occlusion maps",
    )
    params = load_params()
    device = resolve_device(params.device)
    model, _ = load_checkpoint(args.checkpoint, expected=args.model, device=device)
    images, labels = load_mnist(args.data, "test")

    sections = {"seed": params.seed, "device": params.device, "visualize": params.visualize}
    with stage_run(f"visualize@{args.model}", sections) as run:
        out = visualize.compute(
            model,
            images,
            labels,
            name=args.model,
            cfg=params.visualize,
            seed=params.seed,
            device=device,
        )
        write_outputs(out, run, metrics=args.metrics, figures=args.figures, arrays=args.arrays)


if __name__ == "__main__":
    main()
