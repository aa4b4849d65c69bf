"""Stage `transfer`: adversarial examples crafted on one model, scored on the other.

For the targeted and learned-noise attacks it reuses the examples the attack stages
saved; PGD examples are crafted here at `transfer.pgd_eps`. Reads: seed, device,
transfer.*, attacks.pgd (steps, step size, random start). Writes: a 2x2 success
matrix per form (rows: crafted on, columns: scored on) and a heatmap figure.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from mnistlab import attacks, data, transfer
from mnistlab.config import MODEL_NAMES, load_params
from mnistlab.figures import attack as figs
from mnistlab.figures import save_figure
from mnistlab.io import atomic_dir, write_json
from mnistlab.models import load_checkpoint
from mnistlab.stage import stage_main
from mnistlab.tracking import stage_run
from mnistlab.train import to_pixels
from mnistlab.utils import resolve_device, set_seeds

log = logging.getLogger("mnistlab.transfer")


@stage_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--models-dir", required=True, help="holds <model>.pt")
    p.add_argument("--attacks-dir", required=True, help="holds <form>-<model>.npz")
    p.add_argument("--metrics", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    params = load_params()
    device = resolve_device(params.device)
    models = {m: load_checkpoint(Path(args.models_dir) / f"{m}.pt", device)[0]
              for m in MODEL_NAMES}
    images, labels = data.load_mnist(args.data, "test")
    arrays = {}
    for form in ("targeted", "noise"):
        for m in MODEL_NAMES:
            path = Path(args.attacks_dir) / f"{form}-{m}.npz"
            with np.load(path) as f:
                arrays[form, m] = dict(f)

    sections = {"seed": params.seed, "device": params.device, "transfer": params.transfer,
                "attacks.pgd": params.attacks.pgd}
    with stage_run("transfer", sections) as run:
        gen = set_seeds(params.seed)
        cfg, pgd = params.transfer, params.attacks.pgd
        idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(params.seed))
        x = to_pixels(images[idx[: cfg.n_images]]).to(device)
        y = labels[idx[: cfg.n_images]].to(device)
        matrices: dict[str, list[list[float]]] = {"targeted": [], "noise": [], "pgd": []}
        for src in MODEL_NAMES:
            x_adv = attacks.pgd(models[src], x, y, cfg.pgd_eps, pgd.steps,
                                pgd.step_ratio * cfg.pgd_eps, pgd.random_start, False, gen,
                                pgd.batch_size)
            matrices["targeted"].append([transfer.targeted_success(models[dst],
                                                                   arrays["targeted", src])
                                         for dst in MODEL_NAMES])
            matrices["noise"].append([transfer.noise_success(models[dst], arrays["noise", src])
                                      for dst in MODEL_NAMES])
            matrices["pgd"].append([transfer.untargeted_success(models[dst], x_adv, y, x)
                                    for dst in MODEL_NAMES])
        metrics = {"models": list(MODEL_NAMES), "pgd_eps": cfg.pgd_eps,
                   "success": {form: {src: dict(zip(MODEL_NAMES, row, strict=True))
                                      for src, row in zip(MODEL_NAMES, rows, strict=True)}
                               for form, rows in matrices.items()}}
        log.info("transfer success: %s", metrics["success"])
        write_json(args.metrics, metrics)
        with atomic_dir(args.out) as tmp:
            save_figure(figs.transfer_matrix(matrices, list(MODEL_NAMES), cfg.pgd_eps),
                        Path(tmp) / "transfer_matrix.png")
        run.log_metrics(metrics["success"])
        run.log_artifacts([args.out], "figures")


if __name__ == "__main__":
    main()
