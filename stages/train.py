"""Stage `train@<model>`: train one CNN on a seeded train/validation split of MNIST.

Reads: seed, device, train.*, models.<model> (its architecture and overrides); the
architecture's module is imported by name (``ARCH_MODULE``), so its cache key holds only
that one. Writes: the checkpoint, training
metrics (timings live here and nowhere else), the loss/accuracy series CSV and the
training-curve figures. Logs the model to MLflow, registered as mnist-<model>.
"""

from __future__ import annotations

from mnistlab import train
from mnistlab.core.cli import parse_args, resolve_device
from mnistlab.core.config import load_params
from mnistlab.core.mnist import load_mnist
from mnistlab.core.models import build_model, save_checkpoint
from mnistlab.core.outputs import write_outputs
from mnistlab.core.tensors import set_seeds
from mnistlab.harness.runner import torch_run
from mnistlab.harness.runtime import apply_threads, stage_main


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        model="model name",
        data="raw MNIST directory",
        checkpoint="checkpoint file",
        metrics="metrics JSON",
        rows="CSV of loss/accuracy per step",
        figures="figure directory",
    )
    params = load_params()
    apply_threads(params.threads)  # before any torch work
    device = resolve_device(params.device)
    spec = params.model(args.model)
    cfg = params.train_for(args.model)
    images, labels = load_mnist(args.data, "train")  # MD5-verified before any compute

    with torch_run(params, f"train@{args.model}", {"train": cfg}) as run:
        run.log_dataset(args.data, context="training")
        set_seeds(params.seed)
        model, out = train.compute(
            images,
            labels,
            name=args.model,
            build=lambda: build_model(spec.arch, spec.arch_args),
            cfg=cfg,
            seed=params.seed,
            device=device,
        )
        save_checkpoint(
            args.checkpoint,
            model,
            args.model,
            {"seed": params.seed, "train": cfg.model_dump()},
            arch=spec.arch,
            arch_args=spec.arch_args,
        )
        write_outputs(out, metrics=args.metrics, rows=args.rows, figures=args.figures)
        run.log_outputs(out, figures=args.figures)
        run.log_model(model, f"mnist-{args.model}", checkpoint=args.checkpoint)


if __name__ == "__main__":
    main()
