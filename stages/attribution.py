"""Stage `attribution@<model>`: saliency, Integrated Gradients, Grad-CAM and occlusion on
seeded test images, their deletion/insertion curves and the model-randomisation check.

Reads: seed, device, attribution.*. Writes: the attribution figures, the curves and
sanity-check CSVs for `dvc plots`, the maps as arrays, and the metrics.
"""

from __future__ import annotations

from mnistlab import attribution
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
        rows="CSV of deletion/insertion curves",
        sanity="CSV of the sanity check",
        figures="figure directory",
        arrays=".npz of the attribution maps",
    )
    params = load_params()
    device = resolve_device(params.device)
    model, _ = load_checkpoint(args.checkpoint, expected=args.model, device=device)
    images, labels = load_mnist(args.data, "test")

    sections = {"seed": params.seed, "device": params.device, "attribution": params.attribution}
    with stage_run(f"attribution@{args.model}", sections) as run:
        out = attribution.compute(
            model,
            images,
            labels,
            name=args.model,
            cfg=params.attribution,
            seed=params.seed,
            device=device,
        )
        write_outputs(
            out,
            run,
            metrics=args.metrics,
            rows=args.rows,
            figures=args.figures,
            arrays=args.arrays,
            tables={"sanity": args.sanity},
        )


if __name__ == "__main__":
    main()
