"""Seeded choice of the test images an attack works on (one per class, transfer sets)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mnistlab.core.params_types import NUM_CLASSES
from mnistlab.core.tensors import as_pixels, generator, model_device, predict


def _correct_on_all(models: Sequence[nn.Module], images: Tensor, labels: Tensor) -> Tensor:
    ok = torch.ones(len(labels), dtype=torch.bool)
    x = as_pixels(images)
    for m in models:
        ok &= predict(m, x.to(model_device(m))).cpu() == labels
    return ok


def pick_images(
    images: Tensor,
    labels: Tensor,
    wanted: Sequence[int],
    *,
    seed: int | torch.Generator,
    models: nn.Module | Sequence[nn.Module] = (),
    exclude_indices: Sequence[int] = (),
) -> Tensor:
    """Distinct seeded image indices, one per entry of ``wanted`` (a class, repeats allowed).

    Walks one seeded permutation of the data and takes, per class, the first images
    that every model in ``models`` classifies correctly. The order depends only on
    the seed and the data; the models only veto, so passing both models picks images
    both get right, the same for either.

    Args:
        images: uint8 ``(N, 28, 28)`` or pixels ``(N, 1, 28, 28)``.
        labels: ``(N,)`` true labels.
        wanted: the class of each image to pick.
        seed: an int or a generator for the permutation.
        models: none, one, or several models that must classify each pick correctly.
        exclude_indices: indices never picked.

    Raises:
        ValueError: not enough (correctly classified) images of some class.
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    gen = generator(seed)
    labels = labels.cpu()
    order = torch.randperm(len(labels), generator=gen, device=gen.device).cpu()
    if len(exclude_indices):
        order = order[~torch.isin(order, torch.as_tensor(list(exclude_indices)))]
    need = Counter(int(c) for c in wanted)
    chosen: dict[int, Tensor] = {}
    budget = 2 * max(need.values(), default=0) + 8
    while len(chosen) < len(need):
        cand = {c: order[labels[order] == c][:budget] for c in need if c not in chosen}
        flat = torch.cat(list(cand.values()))
        ok = _correct_on_all(models, images[flat], labels[flat]).split(
            [len(v) for v in cand.values()]
        )
        for (c, idx), good in zip(cand.items(), ok, strict=True):
            if int(good.sum()) >= need[c]:
                chosen[c] = idx[good][: need[c]]
            elif len(idx) < budget:  # every image of the class was tried
                raise ValueError(
                    f"only {int(good.sum())} usable images of class {c}, need {need[c]}"
                )
        budget *= 4
    used = Counter()
    out = []
    for c in wanted:
        out.append(int(chosen[int(c)][used[int(c)]]))
        used[int(c)] += 1
    return torch.tensor(out, dtype=torch.long)


def pick_per_class(
    images: Tensor,
    labels: Tensor,
    *,
    models: nn.Module | Sequence[nn.Module],
    classes: Sequence[int],
    seed: int | torch.Generator,
) -> Tensor:
    """One seeded image per class in ``classes``, classified correctly by every model.

    Returns:
        ``(len(classes),)`` indices into ``images``.
    """
    return pick_images(images, labels, classes, seed=seed, models=models)


def pick_transfer_images(
    images: Tensor,
    labels: Tensor,
    *,
    source: int,
    n_same: int,
    n_other: int,
    seed: int | torch.Generator,
    models: nn.Module | Sequence[nn.Module] = (),
    exclude_classes: Sequence[int] = (),
    exclude_indices: Sequence[int] = (),
) -> Tensor:
    """Seeded images for the noise-transfer test (report fig. 20).

    ``n_same`` images of class ``source`` then ``n_other`` images of other classes,
    drawn without repeats (while classes last) from the classes other than ``source``
    and ``exclude_classes``; optionally only images every model gets right.

    Returns:
        ``(n_same + n_other,)`` indices into ``images``.
    """
    gen = generator(seed)
    others = [c for c in range(NUM_CLASSES) if c != source and c not in exclude_classes]
    if n_other and not others:
        raise ValueError("no classes left for the other-class transfer images")
    perm = torch.randperm(len(others), generator=gen, device=gen.device).tolist()
    other = [others[perm[i % len(others)]] for i in range(n_other)]
    return pick_images(
        images,
        labels,
        [source] * n_same + other,
        seed=gen,
        models=models,
        exclude_indices=exclude_indices,
    )


def originals(
    model: nn.Module, test: tuple[Tensor, Tensor], *, seed: int, device: torch.device | str
) -> tuple[Tensor, Tensor]:
    """One seeded, correctly classified test image of each class 0-9.

    Returns:
        The indices ``(10,)`` into the test set and their pixels ``(10, 1, 28, 28)``.
    """
    images, labels = test
    idx = pick_per_class(
        images, labels, models=[model], classes=list(range(NUM_CLASSES)), seed=seed
    )
    return idx, as_pixels(images[idx]).to(device)


def mean(t: Tensor) -> float:
    """Mean of a (bool or numeric) tensor as a float; 0.0 when empty."""
    return float(t.float().mean()) if t.numel() else 0.0
