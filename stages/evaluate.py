"""Stage `evaluate@<model>`: score a trained CNN on the MNIST test set.

Reads: seed, device, evaluate.*. Writes: test metrics (accuracy, loss, per-class
accuracy, the 6 random predictions, the worst mistakes), the confusion pairs CSV
for `dvc plots`, and the figures.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mnistlab import data
from mnistlab.config import load_params
from mnistlab.evaluate import confident_mistakes, evaluate, random_indices
from mnistlab.figures import evaluate as figs
from mnistlab.figures import save_figure
from mnistlab.io import atomic_dir, write_csv, write_json
from mnistlab.models import load_checkpoint
from mnistlab.stage import stage_main
from mnistlab.tracking import stage_run
from mnistlab.utils import resolve_device

log = logging.getLogger("mnistlab.evaluate")


@stage_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--confusion", required=True, help="CSV of (actual, predicted) pairs")
    p.add_argument("--figures", required=True)
    args = p.parse_args(argv)
    params = load_params()
    cfg = params.evaluate
    device = resolve_device(params.device)
    model, _ = load_checkpoint(args.checkpoint, device)
    images, labels = data.load_mnist(args.data, "test")
    if cfg.test_limit:
        images, labels = images[: cfg.test_limit], labels[: cfg.test_limit]

    sections = {"seed": params.seed, "device": params.device, "evaluate": cfg}
    with stage_run(f"evaluate@{args.model}", sections) as run:
        ev = evaluate(model, images, labels, cfg.batch_size, device)
        sample_idx = random_indices(len(labels), cfg.n_samples, params.seed)
        mistake_idx = confident_mistakes(ev, cfg.n_misclassified)
        metrics = {
            "test_accuracy": ev.accuracy,
            "test_loss": ev.loss,
            "n_test": len(labels),
            "n_errors": int((ev.preds != ev.labels).sum()),
            "per_class_accuracy": ev.per_class_accuracy(),
            "samples": ev.describe(sample_idx),
            "misclassified": ev.describe(mistake_idx),
        }
        log.info("%s: test accuracy %.4f (%d errors of %d)", args.model, ev.accuracy,
                 metrics["n_errors"], len(labels))

        write_json(args.metrics, metrics)
        write_csv(args.confusion, [{"actual": int(a), "predicted": int(b)}
                                   for a, b in zip(ev.labels, ev.preds, strict=True)])
        with atomic_dir(args.figures) as tmp:
            out = Path(tmp)
            save_figure(figs.confusion(ev.confusion(), args.model, ev.accuracy),
                        out / "confusion.png")
            save_figure(figs.samples(images[sample_idx], metrics["samples"], args.model),
                        out / "samples.png")
            save_figure(figs.misclassified(images[mistake_idx], metrics["misclassified"],
                                           args.model), out / "misclassified.png")
        run.log_metrics(metrics)
        run.log_artifacts([args.figures], "figures")


if __name__ == "__main__":
    main()
