"""Transfer of adversarial examples between models: crafted on one, scored on another."""

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


def class_model_success(model: nn.Module, arrays: dict[str, np.ndarray]) -> float:
    """Fraction of another model's class images (grown for class k) ``model`` calls k.

    High for a robust source model: its class images look like digits to everyone
    (perceptually aligned gradients, Santurkar et al. 2019).
    """
    images = torch.from_numpy(arrays["images"])
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


def compute(
    models: dict[str, nn.Module],
    arrays: dict[tuple[str, str], dict[str, np.ndarray]],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    params: Params,
    gen: torch.Generator,
    device: torch.device | str,
) -> StageOutputs:
    """The ``transfer`` stage: each attack crafted on one model, scored on every model.

    Args:
        models: ``{name: model}``, in the order of the matrices' rows and columns.
        arrays: ``{(form, model): arrays}`` saved by the targeted and noise attack stages.
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
    fig = figures.transfer_matrix(matrices, names, cfg.pgd_eps)
    return StageOutputs(metrics=metrics, figures={"transfer_matrix": fig})
