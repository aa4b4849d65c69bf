"""The ``visualize@<model>`` stage: what a trained model learned (the study's part 2).

Conv filters and the feature maps of one seeded test image (:mod:`.features`), and
occlusion sensitivity of seeded test images (:mod:`.occlusion`); figures in
:mod:`.figures`. Any classifier of ``(B, 1, 28, 28)`` pixels works: its conv layers are
found by walking it. What does not apply to a model is skipped and said so in the
metrics, ``metrics["not_applicable"] = {output: reason}`` (absent when everything
applies); for a model without a conv layer ``{"filters": "no Conv2d layer",
"activations": "no Conv2d layer"}``, and then no filter or feature-map figure and no
``conv1`` array. Occlusion only runs the model, so it applies to every one.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from mnistlab.core.layers import NO_CONV
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
    same for every model so their figures compare side by side. Filters and activations
    cover every conv layer (``conv1``, ``conv2``, ... in forward order); without one they
    are reported not applicable.
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
    skipped = {} if filters else {"filters": NO_CONV, "activations": NO_CONV}
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
    if skipped:
        metrics["not_applicable"] = skipped  # output -> why it was not computed
    log.info(
        "%s: occlusion mean min prob %.3f, %d of %d images flipped",
        name,
        metrics["occlusion"]["mean_min_prob"],
        metrics["occlusion"]["flipped"],
        len(per_image),
    )
    figs = figures.filter_figures(filters, model=name)  # conv1_filters, conv2_filters_all, ...
    if acts:
        figs["activations"] = figures.activations(act_image.cpu(), acts, model=name)
    figs["occlusion"] = figures.occlusion(occ_x.cpu(), occ_y.cpu(), occ, model=name)
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
    }
    if "conv1" in filters:  # the first conv's weights, for the compare stage
        arrays["conv1"] = filters["conv1"].numpy()
    return StageOutputs(metrics=metrics, figures=figs, arrays=arrays)
