"""Stage `train@<model>`: train one CNN on a seeded train/validation split of MNIST.

Reads: seed, device, train.*, models.<model>. Writes: the checkpoint, training
metrics (timings live here and nowhere else), the loss/accuracy series CSV, and
the training-curve figures. Logs the model to MLflow, registered as mnist-<model>.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mnistlab import data
from mnistlab.config import load_params
from mnistlab.figures import save_figure
from mnistlab.figures import train as figs
from mnistlab.io import atomic_dir, write_csv, write_json
from mnistlab.models import build_model, save_checkpoint
from mnistlab.stage import stage_main
from mnistlab.tracking import stage_run
from mnistlab.train import split_train_val, train_model
from mnistlab.utils import resolve_device, set_seeds

log = logging.getLogger("mnistlab.train")


@stage_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="raw MNIST directory")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--series", required=True, help="CSV of loss/accuracy per step")
    p.add_argument("--figures", required=True, help="directory for PNG figures")
    args = p.parse_args(argv)
    params = load_params()
    cfg = params.train_for(args.model)
    device = resolve_device(params.device)
    images, labels = data.load_mnist(args.data, "train")  # MD5-verified before any compute

    sections = {"seed": params.seed, "device": params.device, "train": cfg}
    with stage_run(f"train@{args.model}", sections) as run:
        set_seeds(params.seed)
        train_x, train_y, val_x, val_y = split_train_val(
            images, labels, cfg.val_size, params.seed, cfg.train_limit
        )
        model = build_model(args.model)
        log.info("training %s on %d images (%d held out), %d epochs, on %s",
                 args.model, len(train_x), len(val_x), cfg.epochs, device)
        res = train_model(model, train_x, train_y, val_x, val_y, cfg, params.seed, device,
                          desc=args.model)
        model.cpu()
        metrics = {
            "val_accuracy": res.val_accuracy[-1],
            "val_loss": res.val_loss[-1],
            "train_seconds": round(res.train_seconds, 3),
            "seconds_per_epoch": [round(s, 3) for s in res.seconds_per_epoch],
            "images_per_second": round(len(train_x) * cfg.epochs / res.train_seconds, 1),
            "n_train": len(train_x),
            "n_val": len(val_x),
            "steps": res.val_steps[-1],
        }
        log.info("%s: validation accuracy %.4f after %.1fs", args.model,
                 metrics["val_accuracy"], res.train_seconds)

        save_checkpoint(args.checkpoint, model, args.model,
                        {"seed": params.seed, "train": cfg.model_dump()})
        write_json(args.metrics, metrics)
        write_csv(args.series, res.rows())
        with atomic_dir(args.figures) as tmp:
            save_figure(figs.loss_curves(res, args.model), Path(tmp) / "loss_curves.png")
            save_figure(figs.val_accuracy(res, args.model), Path(tmp) / "val_accuracy.png")

        run.log_metrics(metrics)
        run.log_series("train_loss", res.train_steps, res.train_loss)
        run.log_series("val_loss", res.val_steps, res.val_loss)
        run.log_series("val_accuracy", res.val_steps, res.val_accuracy)
        run.log_artifacts([args.figures], "figures")
        run.log_model(model, f"mnist-{args.model}")


if __name__ == "__main__":
    main()
