"""Adversarial attacks and their figures, on a CNN trained for seconds on real MNIST."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from mnistlab import attacks, data
from mnistlab.config import parse_params
from mnistlab.figures import attack as figs
from mnistlab.models import build_model
from mnistlab.train import split_train_val, to_pixels, train_model
from mnistlab.utils import set_seeds

TARGETS = [2, 3, 6]


@pytest.fixture(scope="module")
def mnist(mnist_raw: Path):
    images, labels = data.load_mnist(mnist_raw, "train")
    test_x, test_y = data.load_mnist(mnist_raw, "test")
    return split_train_val(images, labels, 500, seed=0, train_limit=2000), (test_x[:2000],
                                                                            test_y[:2000])


@pytest.fixture(scope="module")
def model(mnist) -> torch.nn.Module:
    """cnn_bn (so a forward in training mode would show) trained 2 epochs on 2000 images."""
    (tx, ty, vx, vy), _ = mnist
    cfg = parse_params({"train": {"epochs": 2, "batch_size": 64}}).train
    set_seeds(0)
    m = build_model("cnn_bn")
    train_model(m, tx, ty, vx, vy, cfg, seed=0, progress=False)
    return m


@pytest.fixture(scope="module")
def test_set(mnist) -> tuple[torch.Tensor, torch.Tensor]:
    """200 seeded test images as pixels, and their labels."""
    _, (images, labels) = mnist
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))[:200]
    return to_pixels(images[idx]), labels[idx]


@pytest.fixture(scope="module")
def originals(mnist, model) -> torch.Tensor:
    """One correctly classified test image of each class 0-9, as pixels."""
    _, (images, labels) = mnist
    return to_pixels(images[attacks.pick_per_class(images, labels, [model], range(10), 42)])


@pytest.fixture(scope="module")
def class_res(model) -> attacks.ClassModelResult:
    return attacks.class_model(model, 50, 0.1, 0.0, 0.5, 0.1, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def targeted_res(model, originals) -> attacks.TargetedResult:
    return attacks.targeted(model, originals, TARGETS, 100, 0.01, 0.0)


@pytest.fixture(scope="module")
def noise_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """The report's pairs: every class -> 3, and 4 -> every class."""
    src = torch.tensor(list(range(10)) + [4] * 10)
    dst = torch.tensor([3] * 10 + list(range(10)))
    return src, dst


@pytest.fixture(scope="module")
def noise_res(model, originals, noise_pairs) -> attacks.NoiseResult:
    src, dst = noise_pairs
    return attacks.learn_noise(model, originals[src], dst, 100, 0.01, 0.05)


@contextmanager
def forward_sizes(model: torch.nn.Module) -> Iterator[list[int]]:
    """Record the batch size of every forward call of ``model``."""
    sizes: list[int] = []
    handle = model.register_forward_hook(lambda _m, inp, _out: sizes.append(len(inp[0])))
    try:
        yield sizes
    finally:
        handle.remove()


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((attacks.predict(model, x) == y).float().mean())


# --------------------------------------------------------------------------- class models


def test_class_model_reaches_every_class_in_one_batch(model, class_res) -> None:
    res = class_res
    assert res.images.shape == (10, 1, 28, 28) and res.cost.shape == (51, 10)
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert res.predicted.tolist() == list(range(10))
    assert res.confidence.min() > 0.99
    assert torch.allclose(res.probs.sum(1), torch.ones(10))
    assert torch.equal(res.confidence, res.probs.diagonal())
    mean = res.cost.mean(1)
    assert mean[-1] > mean[0] + 5
    assert (mean.diff() > -0.1).float().mean() > 0.9  # rises (almost) every iteration
    with forward_sizes(model) as sizes:
        attacks.class_model(model, 5, 0.1, 0.0, 0.5, 0.1, torch.Generator().manual_seed(0))
    assert sizes == [10] * 6  # every class together: one forward per step, one at the end


def test_class_model_l2_penalty_darkens_images(model, class_res) -> None:
    dark = attacks.class_model(model, 50, 0.1, 0.05, 0.5, 0.1, torch.Generator().manual_seed(0))
    assert dark.images.pow(2).sum() < class_res.images.pow(2).sum()


def test_same_seed_same_output(model, test_set) -> None:
    def grown(seed: int) -> torch.Tensor:
        return attacks.class_model(model, 5, 0.1, 0.0, 0.5, 0.1,
                                   torch.Generator().manual_seed(seed)).images

    assert torch.equal(grown(3), grown(3))
    assert not torch.equal(grown(3), grown(4))
    x, y = test_set

    def attacked(seed: int) -> torch.Tensor:
        return attacks.pgd(model, x[:50], y[:50], 0.1, 5, 0.02, True, True,
                           torch.Generator().manual_seed(seed))

    assert torch.equal(attacked(5), attacked(5))
    assert not torch.equal(attacked(5), attacked(6))


def test_model_state_is_restored(model, test_set) -> None:
    x, y = test_set
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.zero_grad(set_to_none=True)  # training leaves the last step's gradients
    model.train()
    try:
        attacks.fgsm(model, x[:20], y[:20], 0.1)
        attacks.class_model(model, 3, 0.1, 0.0, 0.5, 0.1, torch.Generator().manual_seed(0))
        attacks.pgd(model, x[:20], y[:20], 0.1, 3, 0.03, True, True, torch.Generator())
        assert model.training
        assert all(p.requires_grad and p.grad is None for p in model.parameters())
    finally:
        model.eval()
    for k, v in model.state_dict().items():  # BN running stats untouched: eval mode inside
        assert torch.equal(v, before[k]), k
    model.requires_grad_(False)
    attacks.fgsm(model, x[:5], y[:5], 0.1)
    assert not any(p.requires_grad for p in model.parameters())
    model.requires_grad_(True)


# --------------------------------------------------------------------------- targeted


def test_targeted_reaches_targets(model, originals, targeted_res) -> None:
    res = targeted_res
    assert res.images.shape == (3, 10, 1, 28, 28)
    assert res.predicted.shape == res.confidence.shape == res.l2.shape == (3, 10)
    assert res.images.min() >= 0 and res.images.max() <= 1
    other = torch.arange(10)[None, :] != torch.tensor(TARGETS)[:, None]
    assert res.success[other].float().mean() >= 0.9
    diff = (res.images - originals[None]).flatten(2)
    assert torch.allclose(res.l2, diff.norm(dim=2), atol=1e-5)
    assert torch.allclose(res.linf, diff.abs().amax(2))
    # the stored predictions are the model's on the stored images
    assert torch.equal(attacks.predict(model, res.images.flatten(0, 1)).view(3, 10),
                       res.predicted)
    with forward_sizes(model) as sizes:
        attacks.targeted(model, originals, TARGETS, 4, 0.01, 0.0)
    assert sizes == [30] * 5  # all 30 pairs in each forward


def test_larger_beta_stays_closer(model, originals, targeted_res) -> None:
    close = attacks.targeted(model, originals, TARGETS, 100, 0.01, 1.0)
    assert close.l2.mean() < 0.8 * targeted_res.l2.mean()


# --------------------------------------------------------------------------- learned noise


def test_learn_noise_reaches_targets(model, originals, noise_pairs, noise_res) -> None:
    src, dst = noise_pairs
    res = noise_res
    x0 = originals[src]
    keep = src != dst
    assert res.noise.shape == res.images.shape == (20, 1, 28, 28)
    assert res.success[keep].float().mean() >= 0.9
    # the noise is projected so that x0 + noise is already in [0, 1]
    assert torch.allclose(res.images, x0 + res.noise, atol=1e-6)
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert torch.allclose(res.noise_l2, res.noise.flatten(1).norm(dim=1), atol=1e-5)
    assert (res.noise_l2[keep] > 0).all()
    part = res.subset(slice(10, 20))
    assert torch.equal(part.noise, res.noise[10:]) and part.cost.shape == (101, 10)


def test_cross_entropy_noise_is_smaller(model, originals, noise_pairs, noise_res) -> None:
    src, dst = noise_pairs
    ce = attacks.learn_noise(model, originals[src], dst, 100, 0.01, 0.05, objective="ce")
    keep = src != dst
    assert ce.success[keep].float().mean() >= 0.9
    assert ce.noise_l2[keep].mean() < noise_res.noise_l2[keep].mean()


def test_apply_noise_every_image_every_noise(model, originals, noise_pairs, noise_res) -> None:
    src, _ = noise_pairs
    with forward_sizes(model) as sizes:
        table = attacks.apply_noise(model, originals[src], noise_res.noise)
    assert sizes == [400]
    assert table.shape == (20, 20)
    assert torch.equal(table.diagonal(), noise_res.predicted)  # own noise on own image
    zero = attacks.apply_noise(model, originals, torch.zeros(3, 1, 28, 28))
    assert torch.equal(zero, torch.arange(10)[:, None].expand(10, 3))  # correctly classified


# --------------------------------------------------------------------------- FGSM / PGD


def test_eps_zero_changes_nothing(model, test_set) -> None:
    x, y = test_set
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(attacks.fgsm(model, x, y, 0.0), x)
    assert torch.equal(attacks.pgd(model, x, y, 0.0, 5, 0.0, True, True, gen), x)
    assert torch.equal(attacks.pgd(model, x, y, 0.0, 5, 0.0, True, False, gen), x)
    assert torch.equal(attacks.pgd_textbook(model, x, y, 0.0, 5, 0.0, True, gen), x)


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_attacks_stay_in_eps_ball_and_pixel_range(model, test_set, eps: float) -> None:
    x, y = test_set
    gen = torch.Generator().manual_seed(0)
    advs = {
        "fgsm": attacks.fgsm(model, x, y, eps, batch_size=64),
        "pgd": attacks.pgd(model, x, y, eps, 10, eps / 4, True, True, gen, batch_size=64),
        "textbook": attacks.pgd_textbook(model, x, y, eps, 10, eps / 2, True, gen),
    }
    for name, adv in advs.items():
        assert adv.shape == x.shape, name
        assert (adv - x).abs().max() <= eps + 1e-6, name
        assert adv.min() >= 0 and adv.max() <= 1, name
    # FGSM moves every pixel by exactly eps unless the pixel range cut it
    moved = (advs["fgsm"] - x).abs()
    inside = (x + eps <= 1) & (x - eps >= 0)
    assert torch.allclose(moved[inside], torch.full_like(moved[inside], eps), atol=1e-6)
    clean = accuracy(model, x, y)
    assert accuracy(model, advs["pgd"], y) < clean
    assert accuracy(model, advs["pgd"], y) <= accuracy(model, advs["fgsm"], y)


def test_early_stop_is_never_less_successful_and_does_less_work(model, test_set) -> None:
    x, y = test_set
    eps, steps, step = 0.15, 10, 0.15 / 4
    with forward_sizes(model) as early_rows:
        early = attacks.pgd(model, x, y, eps, steps, step, True, True,
                            torch.Generator().manual_seed(7), batch_size=64)
    with forward_sizes(model) as full_rows:
        full = attacks.pgd_textbook(model, x, y, eps, steps, step, True,
                                    torch.Generator().manual_seed(7), batch_size=64)
    acc_early, acc_full = accuracy(model, early, y), accuracy(model, full, y)
    assert acc_early <= acc_full
    assert acc_full - acc_early <= 0.05  # the same attack, only stopped earlier
    assert sum(full_rows) == steps * len(x)
    assert sum(early_rows) < 0.8 * sum(full_rows)
    # images the early-stopping attack did not fool followed the textbook trajectory
    robust = attacks.predict(model, early) == y
    same = (early[robust] == full[robust]).flatten(1).all(1).float().mean()
    assert same >= 0.9


def test_pgd_robust_accuracy_falls_with_eps(model, test_set) -> None:
    x, y = test_set
    grid = [0.0, 0.05, 0.1, 0.2, 0.3]
    attack = attacks.pgd_attack(model, 10, 0.25, True, True, torch.Generator().manual_seed(0))
    curve = attacks.robustness_curve(model, x, y, grid, attack, batch_size=64)
    assert [r["eps"] for r in curve] == grid
    acc = [r["robust_accuracy"] for r in curve]
    assert all(a >= b for a, b in zip(acc, acc[1:], strict=False)), acc
    assert acc[0] == pytest.approx(accuracy(model, x, y))
    assert acc[-1] < 0.5 * acc[0]
    assert curve[0]["mean_l2_success"] == 0.0  # at eps 0 only clean mistakes, unmoved
    for r in curve[1:]:  # an L-inf ball of radius eps lies in an L2 ball of 28 * eps
        assert 0 < r["mean_l2_success"] <= 28 * r["eps"] + 1e-4
        assert 0 < r["mean_linf_success"] <= r["eps"] + 1e-6
    fgsm = attacks.robustness_curve(model, x, y, grid, attacks.fgsm_attack(model), 64)
    assert all(p["robust_accuracy"] <= f["robust_accuracy"] for p, f in zip(curve, fgsm,
                                                                             strict=True))


# --------------------------------------------------------------------------- picking images


def test_pick_per_class_is_seeded_and_correct(mnist, model) -> None:
    _, (images, labels) = mnist
    classes = [3, 1, 4, 1, 5, 9]
    idx = attacks.pick_per_class(images, labels, [model, model], classes, 42)
    assert labels[idx].tolist() == classes and len(set(idx.tolist())) == len(classes)
    assert (attacks.predict(model, to_pixels(images[idx])) == labels[idx]).all()
    assert torch.equal(idx, attacks.pick_per_class(images, labels, model, classes,
                                                   torch.Generator().manual_seed(42)))
    assert not torch.equal(idx, attacks.pick_per_class(images, labels, [model], classes, 43))
    # the models only veto: where the seed's first choice is correct, it is kept
    free = attacks.pick_images(images, labels, classes, 42)
    ok = attacks.predict(model, to_pixels(images[free])) == labels[free]
    assert ok.any() and torch.equal(free[ok], idx[ok])
    with pytest.raises(ValueError, match="class 7"):
        attacks.pick_images(images[labels != 7], labels[labels != 7], [7], 0)


def test_pick_transfer_images(mnist, model) -> None:
    _, (images, labels) = mnist
    idx = attacks.pick_transfer_images(images, labels, 5, 6, 4, 42, models=[model],
                                       exclude_classes=[3], exclude_indices=[0, 1, 2])
    got = labels[idx].tolist()
    assert got[:6] == [5] * 6
    assert len(set(got[6:])) == 4 and not {3, 5} & set(got[6:])
    assert len(set(idx.tolist())) == 10 and not {0, 1, 2} & set(idx.tolist())
    assert (attacks.predict(model, to_pixels(images[idx])) == labels[idx]).all()
    assert torch.equal(idx, attacks.pick_transfer_images(
        images, labels, 5, 6, 4, 42, models=[model], exclude_classes=[3],
        exclude_indices=[0, 1, 2]))


# --------------------------------------------------------------------------- figures


def image_axes(fig: Figure) -> int:
    return sum(1 for ax in fig.axes if ax.images)


def test_figures(originals, class_res, targeted_res, noise_pairs, noise_res, test_set) -> None:
    src, _ = noise_pairs
    x, y = test_set
    table = torch.randint(0, 10, (7, 10), generator=torch.Generator().manual_seed(0))
    curve = [{"eps": e, "robust_accuracy": 1 - e, "mean_l2_success": e} for e in (0, 0.1, 0.2)]
    expected = {
        "class_images": (figs.class_images(class_res), 10),
        "class_cost": (figs.class_cost(class_res), 0),
        "targeted_images": (figs.targeted_images(originals, targeted_res, 1,
                                                 labels=list(range(10))), 20),
        "targeted_grid": (figs.targeted_grid(originals, targeted_res), 40),
        "noise_images": (figs.noise_images(originals[src[:10]], noise_res.subset(slice(10)),
                                           "to 3"), 30),
        "transfer_table": (figs.transfer_table(x[:7], y[:7], table, torch.arange(10)), 8),
        "robustness": (figs.robustness({"a": curve, "b": curve}, "PGD"), 0),
    }
    try:
        for name, (fig, n_images) in expected.items():
            assert isinstance(fig, Figure), name
            assert image_axes(fig) == n_images, name
        assert len(expected["class_cost"][0].axes[0].lines) == 10
        assert len(expected["robustness"][0].axes[0].lines) == 2
    finally:
        for fig, _ in expected.values():
            plt.close(fig)
