"""Transfer of adversarial examples between models: crafted on one, scored on another.

Which examples transfer is the attack forms' choice, through the transfer-set contract
below: any form that saves a set in its arrays file gets a matrix over every model, with
no list of forms here. PGD examples are crafted in this stage itself.

The class images are judged here too: the other models' reading (a transfer matrix)
beside the judges adversarial features do not fool (the training digits nearest in pixel
space, from the class_model stages), since only this stage holds every model.

The transfer-set contract (the writers: the ``compute`` of the class_model, targeted and
noise forms). A form whose examples should be scored on every model saves, in its arrays
file ``artifacts/attack/<form>-<model>.npz``, one or more sets, each as three arrays::

    transfer.<set>.images   (K, 1, 28, 28) float32 pixels in [0, 1]
    transfer.<set>.targets  (K,) int64
    transfer.<set>.mode     0-d str array:
        "targeted"    success: the scoring model predicts the target
        "untargeted"  success: it predicts anything but the target (then the true label)

``<set>`` names its matrix in ``metrics/transfer.json`` (``success.<set>``): unique
across forms (by convention the form's name, or ``<form>_<what>``), never ``pgd`` (this
stage's own), and written by every model's stage of the form. The writer leaves out
what is no attack (a targeted pair whose original already is the target). Every model's
sets of one form must be the same sets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from mnistlab.attacks.common.pgd import pgd
from mnistlab.attacks.common.robustness import seeded_test_subset
from mnistlab.core.config import Params
from mnistlab.core.errors import MnistlabError
from mnistlab.core.outputs import TRANSFER_PREFIX, StageOutputs
from mnistlab.core.tensors import model_device, predict

# The arrays-file key of one field of one set: SET_KEY.format(set="targeted", field="mode").
SET_KEY = TRANSFER_PREFIX + "{set}.{field}"
FIELDS = ("images", "targets", "mode")
MODES = ("targeted", "untargeted")
PGD = "pgd"  # the matrix this stage crafts itself: no form may name a set so
_KEY = re.compile(
    rf"^{re.escape(TRANSFER_PREFIX)}(?P<set>[A-Za-z][A-Za-z0-9_]*)\.(?P<field>[a-z]+)$"
)


class TransferSetError(MnistlabError):
    """An attack form's arrays break the transfer-set contract (a writer's bug)."""


class TransferSet(NamedTuple):
    """One set of examples to score on every model."""

    images: np.ndarray  # (K, 1, 28, 28) float32 pixels
    targets: np.ndarray  # (K,) int64
    mode: str  # "targeted" | "untargeted"


def writes_sets(keys: Sequence[str]) -> bool:
    """Whether an arrays file with these member names holds any transfer set: lets the
    stage skip a form's arrays (fgsm's, strong's) without reading them."""
    return any(k.startswith(TRANSFER_PREFIX) for k in keys)


def transfer_sets(
    arrays: Mapping[str, np.ndarray], where: str = "arrays"
) -> dict[str, TransferSet]:
    """The transfer sets in one attack stage's arrays, in the order they were written.

    Raises:
        TransferSetError: a ``transfer.*`` key outside the contract, a set missing a
            field, a shape or mode that is not the contract's; named with ``where``.
    """
    fields: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if not key.startswith("transfer."):
            continue
        match = _KEY.match(key)
        if not match or match["field"] not in FIELDS:
            raise TransferSetError(f"{where}: {key}: not transfer.<set>.(images|targets|mode)")
        fields.setdefault(match["set"], {})[match["field"]] = np.asarray(value)
    return {name: _checked(name, f, where) for name, f in fields.items()}


def _checked(name: str, fields: dict[str, np.ndarray], where: str) -> TransferSet:
    """One set's fields, checked against the contract (a writer's slip fails here, named,
    instead of as a wrong matrix)."""
    prefix = f"{where}: transfer.{name}"
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise TransferSetError(f"{prefix}: missing {', '.join(missing)}")
    images, targets, mode = fields["images"], fields["targets"], fields["mode"]
    if images.ndim != 4 or images.shape[1:] != (1, 28, 28):
        raise TransferSetError(f"{prefix}.images: shape {images.shape}, not (K, 1, 28, 28)")
    if targets.shape != (len(images),) or not np.issubdtype(targets.dtype, np.integer):
        raise TransferSetError(
            f"{prefix}.targets: {targets.dtype} {targets.shape}, not int ({len(images)},)"
        )
    if mode.shape != () or str(mode) not in MODES:
        raise TransferSetError(f"{prefix}.mode: {mode!r}, not one of {', '.join(MODES)}")
    return TransferSet(images.astype(np.float32), targets.astype(np.int64), str(mode))


def set_success(model: nn.Module, s: TransferSet) -> float | None:
    """The share of the set's examples on which ``model`` does what the attack wanted
    (``None`` for an empty set: no example, no rate)."""
    if not len(s.targets):
        return None
    images = torch.from_numpy(s.images)
    targets = torch.from_numpy(s.targets)
    pred = predict(model, images.to(model_device(model))).cpu()  # (K,)
    hit = pred == targets if s.mode == "targeted" else pred != targets
    return float(hit.float().mean())


def untargeted_success(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, x_clean: torch.Tensor
) -> float:
    """Of the images ``model`` classifies correctly when clean, the fraction it gets wrong
    on their adversarial versions."""
    clean_ok = predict(model, x_clean) == y
    fooled = predict(model, x_adv) != y
    return float(fooled[clean_ok].float().mean()) if clean_ok.any() else 0.0


def gather_sets(
    arrays: Mapping[tuple[str, str], Mapping[str, np.ndarray]], names: Sequence[str]
) -> dict[str, dict[str, TransferSet]]:
    """``{set: {model: set}}`` from ``{(form, model): arrays}``: forms in the order the
    arrays come, each form's sets in the order it wrote them.

    Raises:
        TransferSetError: a form's models disagree on its sets (or one lacks the form's
            arrays), two forms write one set name, or a form names a set ``pgd``.
    """
    forms = list(dict.fromkeys(form for form, _ in arrays))
    out: dict[str, dict[str, TransferSet]] = {}
    owner: dict[str, str] = {}
    for form in forms:
        per_model = {
            m: transfer_sets(arrays[form, m], f"{form}-{m}") if (form, m) in arrays else {}
            for m in names
        }
        sets = list(per_model[names[0]])
        for m, found in per_model.items():
            if list(found) != sets:
                raise TransferSetError(
                    f"{form}: model {m} writes transfer sets {list(found)}, model {names[0]} {sets}"
                )
        for name in sets:
            if name == PGD or name in owner:
                taken = "this stage's own PGD" if name == PGD else f"form {owner.get(name)}"
                raise TransferSetError(f"{form}: transfer set {name!r} is taken by {taken}")
            owner[name] = form
            out[name] = {m: per_model[m][name] for m in names}
    return out


def success_matrix(
    models: Mapping[str, nn.Module], per_model: Mapping[str, TransferSet]
) -> list[list[float | None]]:
    """Rows: the model the set was crafted on; columns: the model scoring it."""
    return [[set_success(models[dst], per_model[src]) for dst in models] for src in models]


def pgd_matrix(
    models: Mapping[str, nn.Module],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    params: Params,
    gen: torch.Generator,
    device: torch.device | str,
) -> list[list[float]]:
    """PGD examples crafted on each model at ``transfer.pgd_eps`` (the ``pgd`` form's
    steps and step size), scored on every model: rows crafted on, columns scored on."""
    cfg, pgd_cfg = params.transfer, params.attacks.pgd
    _, x, y = seeded_test_subset(test, n=cfg.n_images, seed=params.seed, device=device)
    rows = []
    for src in models:
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
        rows.append([untargeted_success(models[dst], x_adv, y, x) for dst in models])
    return rows


# Class images judged, per image set: the class_model arrays' key prefix and the matrix
# (the class_model form's transfer set) holding the cross-model reading of that set.
CLASS_MODEL = "class_model"
IMAGE_SETS = {"seeded": ("seeded_", "class_model_seeded"), "from_noise": ("", "class_model")}


def cross_model(matrix: list[list[float]], row: int) -> float:
    """The share of the row model's class images the other models read as intended: the
    mean of its row of a transfer matrix without the diagonal."""
    return float(np.mean([v for j, v in enumerate(matrix[row]) if j != row]))


def class_image_judges(
    arrays: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    matrices: Mapping[str, list[list[float]]],
    names: list[str],
) -> dict[str, dict[str, dict[str, float]]]:
    """``{image set: {model: judges}}``: three judges of each model's class images.

    ``knn_accuracy``: the share whose k nearest training digits vote the intended class;
    ``nearest_l2``: the mean L2 distance to the nearest training digit of the intended
    class (both from the class_model stage, which has the training digits);
    ``cross_model``: the share the other models read as intended (``None`` with one
    model: there is no other). The seeded set adds its seed's own kNN accuracy and
    distance: where every model started.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for image_set, (prefix, matrix) in IMAGE_SETS.items():
        out[image_set] = {}
        for r, m in enumerate(names):
            a = arrays[CLASS_MODEL, m]
            intended = np.arange(len(a[f"{prefix}knn_class"]))  # image k is made for class k
            row = {
                "knn_accuracy": float(np.mean(a[f"{prefix}knn_class"] == intended)),
                "nearest_l2": float(np.mean(a[f"{prefix}nearest_l2"])),
                "cross_model": cross_model(matrices[matrix], r) if len(names) > 1 else None,
            }
            if image_set == "seeded":
                row["seed_knn_accuracy"] = float(np.mean(a["seed_knn_class"] == intended))
                row["seed_nearest_l2"] = float(np.mean(a["seed_nearest_l2"]))
            out[image_set][m] = row
    return out


def _by_name(rows: list[list[float | None]], names: list[str]) -> dict[str, dict[str, float]]:
    """A matrix as ``{crafted on: {scored on: value}}``."""
    return {src: dict(zip(names, row, strict=True)) for src, row in zip(names, rows, strict=True)}


def compute(
    models: dict[str, nn.Module],
    arrays: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    params: Params,
    gen: torch.Generator,
    device: torch.device | str,
) -> StageOutputs:
    """The ``transfer`` stage: every transfer set crafted on one model, scored on every
    model; PGD examples crafted here (when ``attacks.pgd`` is in the params); and the class
    images' three judges, where the cross-model reading meets the training-digit judges the
    class_model stages saved (when that form ran).

    Args:
        models: ``{name: model}``, in the order of the matrices' rows and columns.
        arrays: ``{(form, model): arrays}`` of the forms that write transfer sets; a form
            without sets adds nothing.
    """
    from mnistlab.transfer import figures

    names = list(models)
    sets = gather_sets(arrays, names)
    matrices = {name: success_matrix(models, per_model) for name, per_model in sets.items()}
    not_applicable = {}
    if PGD in params.attacks:
        matrices[PGD] = pgd_matrix(models, test, params=params, gen=gen, device=device)
    else:
        not_applicable[PGD] = "no pgd attack form in params.yaml (its steps and step size)"
    metrics = {
        "models": names,
        "pgd_eps": params.transfer.pgd_eps,
        "success": {name: _by_name(rows, names) for name, rows in matrices.items()},
    }
    figs = {}
    if matrices:
        figs["transfer_matrix"] = figures.transfer_matrix(matrices, names, params.transfer.pgd_eps)
    if all(s in matrices for _, s in IMAGE_SETS.values()):
        judges = class_image_judges(arrays, matrices, names)
        metrics["class_image_judges"] = judges
        figs["class_images_seeded"] = figures.class_images_seeded(
            {m: arrays[CLASS_MODEL, m] for m in names}, judges["seeded"]
        )
    else:
        not_applicable["class_image_judges"] = "no class_model attack form in params.yaml"
    if not_applicable:
        metrics["not_applicable"] = not_applicable
    return StageOutputs(metrics=metrics, figures=figs)
