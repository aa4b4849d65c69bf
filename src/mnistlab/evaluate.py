"""Test-set evaluation: accuracy, loss, per-class accuracy, confusion, picked examples."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.config import NUM_CLASSES
from mnistlab.train import predict_logits


@dataclasses.dataclass(frozen=True)
class Evaluation:
    logits: torch.Tensor  # (N, 10)
    labels: torch.Tensor  # (N,)

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.softmax(1)

    @property
    def preds(self) -> torch.Tensor:
        return self.logits.argmax(1)

    @property
    def accuracy(self) -> float:
        return (self.preds == self.labels).sum().item() / max(len(self.labels), 1)

    @property
    def loss(self) -> float:
        return F.cross_entropy(self.logits, self.labels).item()

    def confusion(self) -> torch.Tensor:
        """``(10, 10)`` counts, rows = true class, columns = predicted class."""
        flat = self.labels * NUM_CLASSES + self.preds
        return torch.bincount(flat, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)

    def per_class_accuracy(self) -> list[float]:
        cm = self.confusion().double()
        return (cm.diag() / cm.sum(1).clamp(min=1)).tolist()

    def describe(self, indices: torch.Tensor) -> list[dict]:
        """True/predicted label and confidence of the given test images."""
        probs = self.probs
        return [
            {"index": int(i), "true": int(self.labels[i]), "predicted": int(self.preds[i]),
             "confidence": float(probs[i].max())}
            for i in indices
        ]


def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> Evaluation:
    """Run ``model`` over uint8 test images in eval mode."""
    return Evaluation(predict_logits(model, images, batch_size, device), labels)


def random_indices(n_total: int, n: int, seed: int) -> torch.Tensor:
    """``n`` distinct seeded random indices (the same for every model given a seed)."""
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


def confident_mistakes(ev: Evaluation, n: int) -> torch.Tensor:
    """Indices of the misclassified images the model was most confident about."""
    wrong = (ev.preds != ev.labels).nonzero().flatten()
    conf = ev.probs[wrong].max(1).values
    return wrong[conf.argsort(descending=True, stable=True)[:n]]
