"""Judges of class images that adversarial features do not fool: real digits in pixel space.

A CNN judge (another model reading the image) shares the non-robust features that fooled
the model that drew it; the training digits do not. Two judges: the class most of the
``k`` nearest training digits have (does the image sit among digits of its class?) and
the L2 distance to the nearest training digit of the intended class (how far is it from
being a real one?).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from mnistlab.core.params_types import NUM_CLASSES
from mnistlab.core.tensors import as_pixels

CHUNK = 10_000  # training digits compared at a time: a (B, CHUNK) distance block


@dataclasses.dataclass
class Judgement:
    """What the training digits say about images meant as classes ``intended``."""

    knn_class: Tensor  # (B,) the class the k nearest training digits vote for
    nearest_l2: Tensor  # (B,) L2 distance to the nearest training digit of the intended class
    intended: Tensor  # (B,) the class each image was made for

    @property
    def knn_correct(self) -> Tensor:
        """``(B,)`` bool: the vote is the intended class."""
        return self.knn_class == self.intended

    def split(self, n: int) -> list[Judgement]:
        """Consecutive groups of ``n`` images (several image sets judged in one pass)."""
        parts = zip(
            *(t.split(n) for t in (self.knn_class, self.nearest_l2, self.intended)), strict=True
        )
        return [Judgement(*p) for p in parts]


def vote(neighbour_labels: Tensor, n_classes: int = NUM_CLASSES) -> Tensor:
    """The majority class of each row of ``neighbour_labels`` ``(B, k)``, nearest first.

    A tie goes to the tied class whose nearest member is nearer; a bonus below 1 breaks
    ties and never outvotes a count.
    """
    b, k = neighbour_labels.shape
    counts = F.one_hot(neighbour_labels, n_classes).sum(1).double()  # (B, C)
    bonus = torch.zeros(b, n_classes, dtype=torch.float64)
    for j in reversed(range(k)):  # the nearest member of a class writes last
        bonus.scatter_(1, neighbour_labels[:, j : j + 1], (k - j) / (k + 1))
    return (counts + bonus).argmax(1)


def judge(
    images: Tensor,
    intended: Tensor,
    train: tuple[Tensor, Tensor],
    *,
    k: int,
    n_classes: int = NUM_CLASSES,
) -> Judgement:
    """kNN class and distance to the nearest digit of the intended class, in pixel L2.

    Args:
        images: pixels ``(B, 1, 28, 28)`` (or uint8 ``(B, 28, 28)``).
        intended: ``(B,)`` the class each image was made for.
        train: the training digits, uint8 ``(N, 28, 28)``, and their labels ``(N,)``.
        k: neighbours that vote (at most N).
    """
    train_images, train_labels = train
    q = as_pixels(images).detach().cpu().flatten(1)  # (B, 784)
    intended = intended.cpu()
    b = len(q)
    k = min(k, len(train_labels))
    best_d = torch.full((b, k), float("inf"))  # (B, k) the k nearest so far, nearest first
    best_y = torch.zeros((b, k), dtype=torch.long)
    own = torch.full((b,), float("inf"))  # (B,) nearest digit of the intended class so far
    for start in range(0, len(train_labels), CHUNK):
        x = as_pixels(train_images[start : start + CHUNK]).flatten(1)  # (n, 784)
        y = train_labels[start : start + CHUNK]  # (n,)
        d = torch.cdist(q, x)  # (B, n)
        same = y[None, :] == intended[:, None]  # (B, n)
        own = torch.minimum(own, d.masked_fill(~same, float("inf")).min(1).values)
        all_d = torch.cat([best_d, d], 1)  # (B, k + n)
        all_y = torch.cat([best_y, y[None, :].expand(b, -1)], 1)
        best_d, idx = all_d.topk(k, dim=1, largest=False, sorted=True)
        best_y = all_y.gather(1, idx)
    return Judgement(knn_class=vote(best_y, n_classes), nearest_l2=own, intended=intended)


def summary(j: Judgement) -> dict[str, float | list]:
    """The judges' numbers for the metrics JSON: means over the images, and per image."""
    return {
        "knn_accuracy": float(j.knn_correct.float().mean()),
        "nearest_l2": float(j.nearest_l2.mean()),
        "knn_class": [int(c) for c in j.knn_class],
        "nearest_l2_per_class": [float(d) for d in j.nearest_l2],
    }
