"""Stage `visualize@<model>`: what a trained CNN learned (the study's part 2).

Reads: seed, device, visualize.*. Writes: conv1/conv2 filter grids, the feature
maps of one seeded test image, occlusion maps for seeded test images (figures and
the raw maps as .npz), and per-image occlusion metrics.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mnistlab import data, inspect
from mnistlab.config import load_params
from mnistlab.evaluate import random_indices
from mnistlab.figures import save_figure
from mnistlab.figures import visualize as figs
from mnistlab.io import atomic_dir, write_json, write_npz
from mnistlab.models import load_checkpoint
from mnistlab.stage import stage_main
from mnistlab.tracking import stage_run
from mnistlab.train import to_pixels
from mnistlab.utils import resolve_device

log = logging.getLogger("mnistlab.visualize")


@stage_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--out", required=True, help="directory for the figures")
    p.add_argument("--arrays", required=True, help=".npz of the raw occlusion maps")
    args = p.parse_args(argv)
    params = load_params()
    cfg = params.visualize.occlusion
    device = resolve_device(params.device)
    model, _ = load_checkpoint(args.checkpoint, device)
    images, labels = data.load_mnist(args.data, "test")

    sections = {"seed": params.seed, "device": params.device, "visualize": params.visualize}
    with stage_run(f"visualize@{args.model}", sections) as run:
        filters = inspect.conv_filters(model)
        # One image for the activations, then n_images for occlusion, all seeded and
        # the same for both models so their figures compare side by side.
        idx = random_indices(len(labels), cfg.n_images + 1, params.seed)
        act_image = to_pixels(images[idx[:1]]).to(device)
        acts = inspect.activations(model, act_image)
        occ_x, occ_y = to_pixels(images[idx[1:]]).to(device), labels[idx[1:]].to(device)
        occ = inspect.occlusion_maps(model, occ_x, occ_y, cfg.patch, cfg.stride, cfg.fill,
                                     cfg.batch_size)
        per_image = [
            {"index": int(i), "label": int(y), "base_prob": float(b), "min_prob": float(m),
             "min_at": [int(r), int(c)], "predicted_at_min": int(pm), "mean_drop": float(d)}
            for i, y, b, m, (r, c), pm, d in zip(
                idx[1:], occ_y, occ.base_prob, occ.min_prob, occ.argmin, occ.pred_at_min,
                occ.mean_drop, strict=True)
        ]
        metrics = {
            "activation_image": int(idx[0]),
            "occlusion": {
                "patch": cfg.patch, "stride": cfg.stride, "fill": cfg.fill,
                "mean_min_prob": float(occ.min_prob.mean()),
                "mean_drop": float(occ.mean_drop.mean()),
                "flipped": int((occ.pred_at_min.cpu() != occ_y.cpu()).sum()),
                "images": per_image,
            },
        }
        log.info("%s: occlusion mean min prob %.3f, %d of %d images flipped", args.model,
                 metrics["occlusion"]["mean_min_prob"], metrics["occlusion"]["flipped"],
                 len(per_image))

        write_json(args.metrics, metrics)
        with atomic_dir(args.out) as tmp:
            out = Path(tmp)
            name = args.model
            fig_map = {
                "conv1_filters": figs.conv1_filters(filters, model=name),
                "conv2_filters_channel0": figs.conv2_filters_channel0(filters, model=name),
                "conv2_filters_all": figs.conv2_filters_all(filters, model=name),
                "activations": figs.activations(act_image.cpu(), acts, model=name),
                "occlusion": figs.occlusion(occ_x.cpu(), occ_y.cpu(), occ, cfg.patch,
                                            cfg.stride, model=name),
            }
            for fig_name, fig in fig_map.items():
                save_figure(fig, out / f"{fig_name}.png")
        write_npz(args.arrays, {
            "images": occ_x.cpu().numpy(), "labels": occ_y.cpu().numpy(),
            "indices": idx[1:].numpy(), "maps": occ.maps.cpu().numpy(),
            "base_prob": occ.base_prob.cpu().numpy(), "patch": cfg.patch,
            "stride": cfg.stride, "fill": cfg.fill})
        run.log_metrics(metrics)
        run.log_artifacts([args.out], "figures")


if __name__ == "__main__":
    main()
