"""The ``visualize@<model>`` stage: what a trained CNN learned (the study's part 2).

Conv filters and the feature maps of one seeded test image (:mod:`.features`), and
occlusion sensitivity of seeded test images (:mod:`.occlusion`); figures in
:mod:`.figures`.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from mnistlab.core.outputs import StageOutputs
from mnistlab.core.params_eval import VisualizeParams
from mnistlab.core.tensors import random_indices, to_pixels

log = logging.getLogger(__name__)


def compute(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    name: str,
    cfg: VisualizeParams,
    seed: int,
    device: torch.device | str = "cpu",
) -> StageOutputs:
    """Filters, activations and occlusion maps of ``model`` on seeded test images.

    One image for the activations, then ``n_images`` for occlusion, all seeded and the
    same for every model so their figures compare side by side.
    """
    from mnistlab.visualize import features, figures, occlusion

    occ_cfg = cfg.occlusion
    filters = features.conv_filters(model)
    idx = random_indices(len(labels), occ_cfg.n_images + 1, seed)
    act_image = to_pixels(images[idx[:1]]).to(device)
    acts = features.activations(model, act_image)
    occ_x, occ_y = to_pixels(images[idx[1:]]).to(device), labels[idx[1:]].to(device)
    occ = occlusion.occlusion_maps(
        model,
        occ_x,
        occ_y,
        patch=occ_cfg.patch,
        stride=occ_cfg.stride,
        fill=occ_cfg.fill,
        batch_size=occ_cfg.batch_size,
    )
    per_image = [
        {
            "index": int(i),
            "label": int(y),
            "base_prob": float(b),
            "min_prob": float(m),
            "min_at": [int(r), int(c)],
            "predicted_at_min": int(pm),
            "mean_drop": float(d),
        }
        for i, y, b, m, (r, c), pm, d in zip(
            idx[1:],
            occ_y,
            occ.base_prob,
            occ.min_prob,
            occ.argmin,
            occ.pred_at_min,
            occ.mean_drop,
            strict=True,
        )
    ]
    metrics = {
        "activation_image": int(idx[0]),
        "occlusion": {
            "patch": occ_cfg.patch,
            "stride": occ_cfg.stride,
            "fill": occ_cfg.fill,
            "mean_min_prob": float(occ.min_prob.mean()),
            "mean_drop": float(occ.mean_drop.mean()),
            "flipped": int((occ.pred_at_min.cpu() != occ_y.cpu()).sum()),
            "images": per_image,
        },
    }
    log.info(
        "%s: occlusion mean min prob %.3f, %d of %d images flipped",
        name,
        metrics["occlusion"]["mean_min_prob"],
        metrics["occlusion"]["flipped"],
        len(per_image),
    )
    figs = {
        "conv1_filters": figures.conv1_filters(filters, model=name),
        "conv2_filters_channel0": figures.conv2_filters_channel0(filters, model=name),
        "conv2_filters_all": figures.conv2_filters_all(filters, model=name),
        "activations": figures.activations(act_image.cpu(), acts, model=name),
        "occlusion": figures.occlusion(occ_x.cpu(), occ_y.cpu(), occ, model=name),
    }
    arrays = {
        "images": occ_x.cpu().numpy(),
        "labels": occ_y.cpu().numpy(),
        "indices": idx[1:].numpy(),
        "maps": occ.maps.cpu().numpy(),
        "base_prob": occ.base_prob.cpu().numpy(),
        "logit_drop": occ.logit_drop.numpy(),
        "preds": occ.preds.numpy(),
        "patch": occ_cfg.patch,
        "stride": occ_cfg.stride,
        "fill": occ_cfg.fill,
        "conv1": filters["conv1"].numpy(),
    }
    return StageOutputs(metrics=metrics, figures=figs, arrays=arrays)
