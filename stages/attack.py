"""Stage `attack@<form>-<model>`: one form of adversarial attack on one trained CNN.

Forms (the study's part 3): `class_model` (class images grown from noise),
`targeted` (test images pushed to target classes), `noise` (learned additive noise
and how it transfers to other images), `fgsm` and `pgd` (robust accuracy vs eps).
Reads: seed, device, attacks.<form>. Writes: figures and arrays under --out, a CSV
series for `dvc plots`, and the metrics JSON.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab import attacks, data
from mnistlab.config import ATTACK_FORMS, Params, load_params
from mnistlab.figures import attack as figs
from mnistlab.figures import save_figure
from mnistlab.io import atomic_dir, write_csv, write_json, write_npz
from mnistlab.models import load_checkpoint
from mnistlab.stage import stage_main
from mnistlab.tracking import stage_run
from mnistlab.train import to_pixels
from mnistlab.utils import resolve_device, set_seeds

log = logging.getLogger("mnistlab.attack")

# A form returns (metrics, CSV rows, {figure file name: Figure}, {array name: ndarray}).
Outputs = tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], dict[str, np.ndarray]]


def _mean(t: torch.Tensor) -> float:
    return float(t.float().mean()) if t.numel() else 0.0


def run_class_model(model, params: Params, test, gen, device) -> Outputs:
    cfg = params.attacks.class_model
    res = attacks.class_model(model, cfg.steps, cfg.lr, cfg.l2, cfg.init_mean, cfg.init_std,
                              gen)
    targets = torch.arange(len(res.predicted))
    metrics = {
        "success_rate": _mean(res.predicted.cpu() == targets),
        "mean_confidence": _mean(res.confidence),
        "confidence": [float(c) for c in res.confidence],
        "predicted": [int(p) for p in res.predicted],
    }
    cost = res.cost.cpu()
    rows = [{"iteration": i, **{f"class_{k}": float(cost[i, k]) for k in range(cost.shape[1])}}
            for i in range(cost.shape[0])]
    fig_map = {"class_images": figs.class_images(res), "class_cost": figs.class_cost(res)}
    return metrics, rows, fig_map, {"images": res.images.cpu().numpy()}


def _originals(model, test, params: Params, device) -> tuple[torch.Tensor, torch.Tensor]:
    """One seeded, correctly classified test image of each class 0-9."""
    images, labels = test
    idx = attacks.pick_per_class(images, labels, [model], list(range(10)), params.seed)
    return idx, to_pixels(images[idx]).to(device)


def run_targeted(model, params: Params, test, gen, device) -> Outputs:
    cfg = params.attacks.targeted
    idx, x0 = _originals(model, test, params, device)
    originals = test[1][idx]
    res = attacks.targeted(model, x0, cfg.targets, cfg.steps, cfg.lr, cfg.beta)
    target = torch.tensor(cfg.targets)[:, None].expand_as(res.predicted.cpu())
    pairs = originals[None, :].expand_as(target) != target  # original == target is no attack
    hit = (res.predicted.cpu() == target)[pairs]
    metrics = {
        "success_rate": _mean(hit),
        "mean_confidence": _mean(res.confidence.cpu()[pairs]),
        "mean_l2": _mean(res.l2.cpu()[pairs]),
        "mean_linf": _mean(res.linf.cpu()[pairs]),
        "originals": [int(i) for i in idx],
        "per_target": {
            str(t): {"success_rate": _mean((res.predicted.cpu()[i] == t)[pairs[i]]),
                     "mean_confidence": _mean(res.confidence.cpu()[i][pairs[i]])}
            for i, t in enumerate(cfg.targets)
        },
    }
    rows = [{"target": t, "original": int(originals[j]), "predicted": int(res.predicted[i, j]),
             "confidence": float(res.confidence[i, j]), "l2": float(res.l2[i, j]),
             "linf": float(res.linf[i, j])}
            for i, t in enumerate(cfg.targets) for j in range(len(idx))]
    fig_map = {f"targeted_images_{t}": figs.targeted_images(x0.cpu(), res, i, labels=originals)
               for i, t in enumerate(cfg.targets)}
    arrays = {"originals": x0.cpu().numpy(), "original_labels": originals.numpy(),
              "targets": np.asarray(cfg.targets), "images": res.images.cpu().numpy()}
    return metrics, rows, fig_map, arrays


def run_noise(model, params: Params, test, gen, device) -> Outputs:
    cfg = params.attacks.noise
    idx, x0 = _originals(model, test, params, device)
    # The report's pair sets: every class -> `target`; each of `originals` -> every class.
    # The transfer source's set is learned too when it is not among them.
    sets = {f"to_{cfg.target}": (list(range(10)), [cfg.target] * 10)}
    for o in dict.fromkeys([*cfg.originals, cfg.transfer_original]):
        sets[f"from_{o}"] = ([o] * 10, list(range(10)))
    src = torch.tensor([c for orig, _ in sets.values() for c in orig])
    dst = torch.tensor([t for _, tgt in sets.values() for t in tgt])
    res = attacks.learn_noise(model, x0[src], dst.to(device), cfg.steps, cfg.lr, cfg.penalty,
                              cfg.objective)
    hit = res.predicted.cpu() == dst
    real = src != dst  # a class "attacked" into itself is no attack
    reported = torch.tensor([name != f"from_{cfg.transfer_original}" or
                             cfg.transfer_original in cfg.originals
                             for name in sets for _ in range(10)])
    chunks = {name: slice(i * 10, (i + 1) * 10) for i, name in enumerate(sets)}

    # Transfer (report fig. 20): the ten noises learned on one image of class
    # `transfer_original` applied to other seeded test images, of that class and others.
    images, labels = test
    t_idx = attacks.pick_transfer_images(
        images, labels, cfg.transfer_original, cfg.n_transfer_same, cfg.n_transfer_other,
        params.seed, models=[model], exclude_indices=idx.tolist())
    t_x, t_y = to_pixels(images[t_idx]).to(device), labels[t_idx]
    t_noise = res.noise[chunks[f"from_{cfg.transfer_original}"]]
    table = attacks.apply_noise(model, t_x, t_noise).cpu()  # (images, noise for target k)
    noise_targets = torch.arange(10)
    to_target = table == noise_targets[None, :]
    informative = t_y[:, None] != noise_targets[None, :]  # already of class k says nothing
    same = (t_y == cfg.transfer_original)[:, None]

    keep = real & reported
    metrics = {
        "success_rate": _mean(hit[keep]),
        "mean_confidence": _mean(res.confidence.cpu()[keep]),
        "mean_noise_l2": _mean(res.noise_l2.cpu()[keep]),
        "per_set": {name: _mean(hit[sl][real[sl]]) for name, sl in chunks.items()},
        "transfer": {"same_class_rate": _mean(to_target[informative & same]),
                     "other_class_rate": _mean(to_target[informative & ~same]),
                     "images": [int(i) for i in t_idx], "labels": [int(y) for y in t_y],
                     "predicted": table.tolist()},
        "originals": [int(i) for i in idx],
    }
    rows = [{"image": int(t_idx[r]), "label": int(t_y[r]), "noise_target": k,
             "predicted": int(table[r, k])}
            for r in range(len(t_idx)) for k in range(10)]
    fig_map = {f"noise_{name}": figs.noise_images(
        x0[src[sl]].cpu(), res.subset(sl), f"learned noise, {name.replace('_', ' ')}")
        for name, sl in chunks.items()}
    fig_map["noise_transfer"] = figs.transfer_table(t_x.cpu(), t_y, table, noise_targets)
    arrays = {"originals": x0[src].cpu().numpy(), "sources": src.numpy(),
              "targets": dst.numpy(), "noise": res.noise.cpu().numpy(),
              "images": res.images.cpu().numpy()}
    return metrics, rows, fig_map, arrays


def _robustness(form: str, model, params: Params, test, gen, device) -> Outputs:
    cfg = getattr(params.attacks, form)
    images, labels = test
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(params.seed))
    idx = idx[: cfg.n_images]
    x, y = to_pixels(images[idx]).to(device), labels[idx].to(device)
    if form == "fgsm":
        attack = attacks.fgsm_attack(model, cfg.batch_size)
    else:
        attack = attacks.pgd_attack(model, cfg.steps, cfg.step_ratio, cfg.random_start,
                                    cfg.early_stop, gen, cfg.batch_size)
    curve = attacks.robustness_curve(model, x, y, cfg.eps, attack, cfg.batch_size)
    metrics = {
        "n_images": len(y),
        "robust_accuracy": {f"{c['eps']:g}": c["robust_accuracy"] for c in curve},
        "mean_l2_success": {f"{c['eps']:g}": c["mean_l2_success"] for c in curve},
    }
    rows = [{"eps": c["eps"], "robust_accuracy": c["robust_accuracy"],
             "mean_l2_success": c["mean_l2_success"]} for c in curve]
    fig_map = {"robustness": figs.robustness({form.upper(): curve}, f"{form.upper()} robustness")}
    return metrics, rows, fig_map, {"indices": idx.numpy(), "eps": np.asarray(cfg.eps)}


FORMS: dict[str, Callable[..., Outputs]] = {
    "class_model": run_class_model,
    "targeted": run_targeted,
    "noise": run_noise,
    "fgsm": lambda *a: _robustness("fgsm", *a),
    "pgd": lambda *a: _robustness("pgd", *a),
}
assert set(FORMS) == set(ATTACK_FORMS)


@stage_main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--form", required=True, choices=sorted(FORMS))
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--series", required=True, help="CSV for dvc plots")
    p.add_argument("--out", required=True, help="directory for the figures")
    p.add_argument("--arrays", required=True, help=".npz of the images the attack made")
    args = p.parse_args(argv)
    params = load_params()
    device = resolve_device(params.device)
    model, _ = load_checkpoint(args.checkpoint, device)
    test = data.load_mnist(args.data, "test")

    stage = f"attack@{args.form}-{args.model}"
    sections = {"seed": params.seed, "device": params.device,
                f"attacks.{args.form}": getattr(params.attacks, args.form)}
    with stage_run(stage, sections) as run:
        gen = set_seeds(params.seed)
        metrics, rows, fig_map, arrays = FORMS[args.form](model, params, test, gen, device)
        log.info("%s: %s", stage, {k: v for k, v in metrics.items()
                                   if isinstance(v, (int, float))})
        write_json(args.metrics, metrics)
        write_csv(args.series, rows)
        with atomic_dir(args.out) as tmp:
            for name, fig in fig_map.items():
                save_figure(fig, Path(tmp) / f"{name}.png")
        write_npz(args.arrays, arrays)
        run.log_metrics(metrics)
        run.log_artifacts([args.out], "figures")


if __name__ == "__main__":
    main()
