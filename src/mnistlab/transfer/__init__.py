"""Transfer of adversarial examples between models: crafted on one, scored on another.

The class images are judged here too: the other models' reading (a transfer matrix)
beside the judges adversarial features do not fool (the training digits nearest in pixel
space, from the class_model stages), since only this stage holds all three models.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mnistlab.attacks.common.pgd import pgd
from mnistlab.attacks.common.robustness import seeded_test_subset
from mnistlab.core.config import Params
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.tensors import model_device, predict


def targeted_success(model: nn.Module, arrays: dict[str, np.ndarray]) -> float:
    """Fraction of targeted examples (original class != target) ``model`` puts in the target."""
    images = torch.from_numpy(arrays["images"])  # (T, N, 1, 28, 28)
    targets = torch.from_numpy(arrays["targets"]).long()[:, None].expand(images.shape[:2])
    originals = torch.from_numpy(arrays["original_labels"]).long()[None, :].expand_as(targets)
    keep = originals != targets
    pred = predict(model, images.flatten(0, 1).to(model_device(model))).cpu().view(targets.shape)
    return float((pred == targets)[keep].float().mean())


def class_model_success(
    model: nn.Module, arrays: dict[str, np.ndarray], key: str = "images"
) -> float:
    """Fraction of another model's class images (made for class k) ``model`` calls k.

    High for a robust source model: its class images look like digits to everyone
    (perceptually aligned gradients, Santurkar et al. 2019). ``key``: ``images`` (grown
    from noise) or ``seeded_images`` (from a seed inside an L2 ball).
    """
    images = torch.from_numpy(arrays[key])
    pred = predict(model, images.to(model_device(model))).cpu()
    return float((pred == torch.arange(len(images))).float().mean())


def noise_success(model: nn.Module, arrays: dict[str, np.ndarray]) -> float:
    """Fraction of learned-noise examples (source != target) ``model`` puts in the target."""
    images = torch.from_numpy(arrays["images"])
    targets = torch.from_numpy(arrays["targets"]).long()
    keep = torch.from_numpy(arrays["sources"]).long() != targets
    return float(
        (predict(model, images.to(model_device(model))).cpu() == targets)[keep].float().mean()
    )


def untargeted_success(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, x_clean: torch.Tensor
) -> float:
    """Of the images ``model`` classifies correctly when clean, the fraction it gets wrong
    on their adversarial versions."""
    clean_ok = predict(model, x_clean) == y
    fooled = predict(model, x_adv) != y
    return float(fooled[clean_ok].float().mean()) if clean_ok.any() else 0.0


# Class images judged, per image set: the class_model arrays' key prefix and the matrix
# holding the cross-model reading of that set.
IMAGE_SETS = {"seeded": ("seeded_", "class_model_seeded"), "from_noise": ("", "class_model")}


def cross_model(matrix: list[list[float]], row: int) -> float:
    """The share of the row model's class images the other models read as intended: the
    mean of its row of a transfer matrix without the diagonal."""
    return float(np.mean([v for j, v in enumerate(matrix[row]) if j != row]))


def class_image_judges(
    arrays: dict[tuple[str, str], dict[str, np.ndarray]],
    matrices: dict[str, list[list[float]]],
    names: list[str],
) -> dict[str, dict[str, dict[str, float]]]:
    """``{image set: {model: judges}}``: three judges of each model's class images.

    ``knn_accuracy``: the share whose k nearest training digits vote the intended class;
    ``nearest_l2``: the mean L2 distance to the nearest training digit of the intended
    class (both from the class_model stage, which has the training digits);
    ``cross_model``: the share the other models read as intended. The seeded set adds its
    seed's own kNN accuracy and distance: where every model started.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for image_set, (prefix, form) in IMAGE_SETS.items():
        out[image_set] = {}
        for r, m in enumerate(names):
            a = arrays["class_model", m]
            intended = np.arange(len(a[f"{prefix}knn_class"]))  # image k is made for class k
            row = {
                "knn_accuracy": float(np.mean(a[f"{prefix}knn_class"] == intended)),
                "nearest_l2": float(np.mean(a[f"{prefix}nearest_l2"])),
                "cross_model": cross_model(matrices[form], r),
            }
            if image_set == "seeded":
                row["seed_knn_accuracy"] = float(np.mean(a["seed_knn_class"] == intended))
                row["seed_nearest_l2"] = float(np.mean(a["seed_nearest_l2"]))
            out[image_set][m] = row
    return out


def compute(
    models: dict[str, nn.Module],
    arrays: dict[tuple[str, str], dict[str, np.ndarray]],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    params: Params,
    gen: torch.Generator,
    device: torch.device | str,
) -> StageOutputs:
    """The ``transfer`` stage: each attack crafted on one model, scored on every model;
    and the class images' three judges, where the cross-model reading meets the
    training-digit judges the class_model stages saved.

    Args:
        models: ``{name: model}``, in the order of the matrices' rows and columns.
        arrays: ``{(form, model): arrays}`` saved by the class_model, targeted and noise
            attack stages.
    """
    from mnistlab.transfer import figures

    cfg, pgd_cfg = params.transfer, params.attacks.pgd
    names = list(models)
    _, x, y = seeded_test_subset(test, n=cfg.n_images, seed=params.seed, device=device)
    matrices: dict[str, list[list[float]]] = {
        "class_model": [],
        "targeted": [],
        "noise": [],
        "pgd": [],
        "class_model_seeded": [],  # a judge of the class images' table, not in the figure
    }
    for src in names:
        x_adv = pgd(
            models[src],
            x,
            y,
            eps=cfg.pgd_eps,
            steps=pgd_cfg.steps,
            step_size=pgd_cfg.step_ratio * cfg.pgd_eps,
            random_start=pgd_cfg.random_start,
            early_stop=False,
            gen=gen,
            batch_size=pgd_cfg.batch_size,
        )
        matrices["class_model"].append(
            [class_model_success(models[dst], arrays["class_model", src]) for dst in names]
        )
        matrices["targeted"].append(
            [targeted_success(models[dst], arrays["targeted", src]) for dst in names]
        )
        matrices["noise"].append(
            [noise_success(models[dst], arrays["noise", src]) for dst in names]
        )
        matrices["pgd"].append([untargeted_success(models[dst], x_adv, y, x) for dst in names])
        matrices["class_model_seeded"].append(
            [
                class_model_success(models[dst], arrays["class_model", src], "seeded_images")
                for dst in names
            ]
        )
    metrics = {
        "models": names,
        "pgd_eps": cfg.pgd_eps,
        "success": {
            form: {
                src: dict(zip(names, row, strict=True))
                for src, row in zip(names, rows, strict=True)
            }
            for form, rows in matrices.items()
        },
    }
    judges = class_image_judges(arrays, matrices, names)
    metrics["class_image_judges"] = judges
    drawn = {f: matrices[f] for f in ("class_model", "targeted", "noise", "pgd")}
    figs = {
        "transfer_matrix": figures.transfer_matrix(drawn, names, cfg.pgd_eps),
        "class_images_seeded": figures.class_images_seeded(
            {m: arrays["class_model", m] for m in names}, judges["seeded"]
        ),
    }
    return StageOutputs(metrics=metrics, figures=figs)
