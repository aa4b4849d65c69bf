"""Training and evaluation on a small real subset of MNIST."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.mnist_small import load_small
from helpers.params import params_with
from helpers.study import NATURAL, build_model
from helpers.study import save as save_checkpoint
from mnistlab.core.models import load_checkpoint
from mnistlab.core.tensors import random_indices, set_seeds, to_pixels
from mnistlab.evaluate import Evaluation, confident_mistakes, evaluate
from mnistlab.train import random_shift, split_train_val, train_model


def test_to_pixels_range_and_layout() -> None:
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    images[0, 3, 4] = 255
    x = to_pixels(images, channels_last=True)
    assert x.shape == (2, 1, 28, 28)
    assert x.min() == 0 and x.max() == 1
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_random_shift_moves_each_image_within_bounds() -> None:
    images = torch.zeros(64, 28, 28, dtype=torch.uint8)
    images[:, 10, 12] = 255
    shifted = random_shift(images, max_shift=2, gen=torch.Generator().manual_seed(0))
    pos = (shifted == 255).nonzero()[:, 1:]
    assert len(pos) == 64  # one pixel per image survives
    offsets = pos - torch.tensor([10, 12])
    assert offsets.abs().max() == 2
    assert len({tuple(o) for o in offsets.tolist()}) > 10  # offsets differ per image
    assert torch.equal(random_shift(images, max_shift=0, gen=torch.Generator()), images)


def test_split_is_seeded_and_disjoint() -> None:
    images = torch.arange(100, dtype=torch.uint8).reshape(100, 1, 1).expand(100, 28, 28)
    labels = torch.arange(100)
    a = split_train_val(images, labels, val_size=10, seed=1, train_limit=50)
    b = split_train_val(images, labels, val_size=10, seed=1, train_limit=50)
    c = split_train_val(images, labels, val_size=10, seed=2)
    assert torch.equal(a[1], b[1]) and torch.equal(a[3], b[3])
    assert not torch.equal(a[3], c[3])
    assert len(a[1]) == 50 and len(a[3]) == 10
    assert not set(a[1].tolist()) & set(a[3].tolist())


@pytest.fixture(scope="module")
def small_mnist():
    images, labels = load_small("train")
    test_x, test_y = load_small("test")
    return split_train_val(images, labels, val_size=300, seed=0, train_limit=600), (
        test_x[:500],
        test_y[:500],
    )


@pytest.mark.parametrize("name", NATURAL)
def test_tiny_run_lowers_loss_and_records_curves(small_mnist, name: str) -> None:
    (tx, ty, vx, vy), _ = small_mnist
    cfg = params_with({"train": {"epochs": 2, "log_every": 2, "batch_size": 32}}).train
    set_seeds(0)
    model = build_model(name)
    res = train_model(model, tx, ty, vx, vy, cfg=cfg, seed=0, progress=False)
    assert res.train_loss[-1] < res.train_loss[0]
    assert res.val_loss[-1] < 2.0  # chance level is ln(10) = 2.30
    assert len(res.seconds_per_epoch) == 2 and len(res.val_accuracy) == 2
    assert res.steps_per_epoch == 600 // 32 + 1
    assert res.val_steps[-1] == 2 * res.steps_per_epoch
    assert not model.training
    rows = res.rows()
    assert [r["step"] for r in rows] == sorted({*res.train_steps, *res.val_steps})


def test_training_is_deterministic(small_mnist) -> None:
    (tx, ty, vx, vy), _ = small_mnist
    cfg = params_with({"train": {"epochs": 1, "batch_size": 64}}).train
    states = []
    for _ in range(2):
        set_seeds(3)
        model = build_model("cnn_bn")
        train_model(model, tx, ty, vx, vy, cfg=cfg, seed=3, progress=False)
        states.append(model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_train_then_evaluate_agree(small_mnist, tmp_path: Path) -> None:
    """The saved model's accuracy from `evaluate` equals a direct count on the same images."""
    (tx, ty, vx, vy), (test_x, test_y) = small_mnist
    cfg = params_with({"train": {"epochs": 1, "batch_size": 32}}).train
    set_seeds(0)
    model = build_model("cnn")
    res = train_model(model, tx, ty, vx, vy, cfg=cfg, seed=0, progress=False)
    save_checkpoint(tmp_path / "cnn.pt", model, "cnn", {})
    loaded, _ = load_checkpoint(tmp_path / "cnn.pt", expected="cnn")

    ev = evaluate(loaded, test_x, test_y, batch_size=128)
    with torch.no_grad():
        correct = (loaded(test_x.unsqueeze(1).float() / 255).argmax(1) == test_y).sum().item()
    assert ev.accuracy == pytest.approx(correct / len(test_y), abs=1e-12)
    # and the validation accuracy recorded during training is what the model scores now
    val = evaluate(loaded, vx, vy)
    assert val.accuracy == pytest.approx(res.val_accuracy[-1], abs=1e-9)
    assert ev.confusion().sum() == len(test_y)
    assert ev.confusion().diag().sum() == round(ev.accuracy * len(test_y))


def test_picked_examples() -> None:
    logits = torch.tensor([[5.0, 0], [0, 9.0], [0, 1.0], [3.0, 0]])
    ev = Evaluation(logits, torch.tensor([0, 0, 0, 1]))
    assert confident_mistakes(ev, 5).tolist() == [1, 3, 2]
    assert torch.equal(random_indices(100, 6, seed=7), random_indices(100, 6, seed=7))
    assert len(set(random_indices(100, 6, seed=7).tolist())) == 6
    assert ev.per_class_accuracy()[:2] == [1 / 3, 0.0]
