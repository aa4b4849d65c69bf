"""Test-set evaluation: accuracy, loss, per-class accuracy, confusion, picked examples."""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.core.outputs import StageOutputs
from mnistlab.core.params_eval import EvaluateParams
from mnistlab.core.params_types import NUM_CLASSES
from mnistlab.core.tensors import predict_logits, random_indices

log = logging.getLogger(__name__)


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
            {
                "index": int(i),
                "true": int(self.labels[i]),
                "predicted": int(self.preds[i]),
                "confidence": float(probs[i].max()),
            }
            for i in indices
        ]


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> Evaluation:
    """Run ``model`` over uint8 test images in eval mode."""
    return Evaluation(predict_logits(model, images, batch_size=batch_size, device=device), labels)


def confident_mistakes(ev: Evaluation, n: int) -> torch.Tensor:
    """Indices of the misclassified images the model was most confident about."""
    wrong = (ev.preds != ev.labels).nonzero().flatten()
    conf = ev.probs[wrong].max(1).values
    return wrong[conf.argsort(descending=True, stable=True)[:n]]


def compute(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    name: str,
    cfg: EvaluateParams,
    seed: int,
    device: torch.device | str = "cpu",
) -> StageOutputs:
    """The ``evaluate@<name>`` stage: test metrics, confusion pairs and figures."""
    from mnistlab.evaluate import figures

    if cfg.test_limit:
        images, labels = images[: cfg.test_limit], labels[: cfg.test_limit]
    ev = evaluate(model, images, labels, cfg.batch_size, device)
    sample_idx = random_indices(len(labels), cfg.n_samples, seed)
    mistake_idx = confident_mistakes(ev, cfg.n_misclassified)
    metrics = {
        "test_accuracy": ev.accuracy,
        "test_loss": ev.loss,
        "n_test": len(labels),
        "n_errors": int((ev.preds != ev.labels).sum()),
        "per_class_accuracy": ev.per_class_accuracy(),
        "samples": ev.describe(sample_idx),
        "misclassified": ev.describe(mistake_idx),
    }
    log.info(
        "%s: test accuracy %.4f (%d errors of %d)",
        name,
        ev.accuracy,
        metrics["n_errors"],
        len(labels),
    )
    return StageOutputs(
        metrics=metrics,
        rows=[
            {"actual": int(a), "predicted": int(b)}
            for a, b in zip(ev.labels, ev.preds, strict=True)
        ],
        figures={
            "confusion": figures.confusion(ev.confusion(), name, ev.accuracy),
            "samples": figures.samples(images[sample_idx], metrics["samples"], name),
            "misclassified": figures.misclassified(
                images[mistake_idx], metrics["misclassified"], name
            ),
        },
    )
