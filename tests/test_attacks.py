"""Adversarial attacks and their figures, on a CNN trained for seconds on real MNIST."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from helpers.mnist_small import load_small
from helpers.params import params_with
from helpers.study import build_model
from mnistlab.attacks.class_model import ClassModelResult, class_model
from mnistlab.attacks.class_model import compute as class_model_compute
from mnistlab.attacks.class_model import figures as class_figs
from mnistlab.attacks.class_model.judges import judge, vote
from mnistlab.attacks.class_model.synthesis import class_means, project_l2, seeds, synthesize
from mnistlab.attacks.common import figures as common_figs
from mnistlab.attacks.common.inputs import AttackInputs
from mnistlab.attacks.common.pgd import (
    fgsm,
    fgsm_attack,
    pgd,
    pgd_attack,
    pgd_textbook,
    robustness_curve,
)
from mnistlab.attacks.common.selection import pick_images, pick_per_class, pick_transfer_images
from mnistlab.attacks.noise import NoiseResult, apply_noise, learn_noise, transfer_rates
from mnistlab.attacks.noise import figures as noise_figs
from mnistlab.attacks.targeted import TargetedResult, targeted
from mnistlab.attacks.targeted import figures as targeted_figs
from mnistlab.core.tensors import frozen, predict, set_seeds, to_pixels
from mnistlab.train import split_train_val, train_model

TARGETS = [2, 3, 6]


@pytest.fixture(scope="module")
def mnist():
    images, labels = load_small("train")
    test_x, test_y = load_small("test")
    split = split_train_val(images, labels, val_size=500, seed=0, train_limit=2000)
    return split, (test_x[:2000], test_y[:2000])


@pytest.fixture(scope="module")
def model(mnist) -> torch.nn.Module:
    """cnn_bn (so a forward in training mode would show) trained 2 epochs on 2000 images."""
    (tx, ty, vx, vy), _ = mnist
    cfg = params_with({"train": {"epochs": 2, "batch_size": 64}}).train
    set_seeds(0)
    m = build_model("cnn_bn")
    train_model(m, tx, ty, vx, vy, cfg=cfg, seed=0, progress=False)
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
    idx = pick_per_class(images, labels, models=[model], classes=range(10), seed=42)
    return to_pixels(images[idx])


def grow(model: torch.nn.Module, steps: int, *, l2: float = 0.0, seed: int = 0) -> ClassModelResult:
    """Class models from N(0.5, 0.1) noise with Adam at lr 0.1."""
    return class_model(
        model,
        steps=steps,
        lr=0.1,
        l2=l2,
        init_mean=0.5,
        init_std=0.1,
        gen=torch.Generator().manual_seed(seed),
    )


@pytest.fixture(scope="module")
def class_res(model) -> ClassModelResult:
    return grow(model, 50)


@pytest.fixture(scope="module")
def targeted_res(model, originals) -> TargetedResult:
    return targeted(model, originals, targets=TARGETS, steps=100, lr=0.01, beta=0.0)


@pytest.fixture(scope="module")
def noise_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """The report's pairs: every class -> 3, and 4 -> every class."""
    src = torch.tensor(list(range(10)) + [4] * 10)
    dst = torch.tensor([3] * 10 + list(range(10)))
    return src, dst


@pytest.fixture(scope="module")
def noise_res(model, originals, noise_pairs) -> NoiseResult:
    src, dst = noise_pairs
    return learn_noise(model, originals[src], dst, steps=100, lr=0.01, penalty=0.05)


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
    return float((predict(model, x) == y).float().mean())


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
        grow(model, 5)
    assert sizes == [10] * 6  # every class together: one forward per step, one at the end


def test_class_model_l2_penalty_darkens_images(model, class_res) -> None:
    dark = grow(model, 50, l2=0.05)
    assert dark.images.pow(2).sum() < class_res.images.pow(2).sum()


def test_same_seed_same_output(model, test_set) -> None:
    def grown(seed: int) -> torch.Tensor:
        return grow(model, 5, seed=seed).images

    assert torch.equal(grown(3), grown(3))
    assert not torch.equal(grown(3), grown(4))
    x, y = test_set

    def attacked(seed: int) -> torch.Tensor:
        return pgd(
            model,
            x[:50],
            y[:50],
            eps=0.1,
            steps=5,
            step_size=0.02,
            random_start=True,
            early_stop=True,
            gen=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(attacked(5), attacked(5))
    assert not torch.equal(attacked(5), attacked(6))


def test_model_state_is_restored(model, test_set) -> None:
    x, y = test_set
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.zero_grad(set_to_none=True)  # training leaves the last step's gradients
    model.train()
    try:
        fgsm(model, x[:20], y[:20], eps=0.1)
        grow(model, 3)
        pgd(
            model,
            x[:20],
            y[:20],
            eps=0.1,
            steps=3,
            step_size=0.03,
            random_start=True,
            early_stop=True,
            gen=torch.Generator(),
        )
        assert model.training
        assert all(p.requires_grad and p.grad is None for p in model.parameters())
    finally:
        model.eval()
    for k, v in model.state_dict().items():  # BN running stats untouched: eval mode inside
        assert torch.equal(v, before[k]), k
    model.requires_grad_(False)
    fgsm(model, x[:5], y[:5], eps=0.1)
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
    assert torch.equal(predict(model, res.images.flatten(0, 1)).view(3, 10), res.predicted)
    with forward_sizes(model) as sizes:
        targeted(model, originals, targets=TARGETS, steps=4, lr=0.01, beta=0.0)
    assert sizes == [30] * 5  # all 30 pairs in each forward


def test_larger_beta_stays_closer(model, originals, targeted_res) -> None:
    close = targeted(model, originals, targets=TARGETS, steps=100, lr=0.01, beta=1.0)
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
    ce = learn_noise(model, originals[src], dst, steps=100, lr=0.01, penalty=0.05, objective="ce")
    keep = src != dst
    assert ce.success[keep].float().mean() >= 0.9
    assert ce.noise_l2[keep].mean() < noise_res.noise_l2[keep].mean()


def test_apply_noise_every_image_every_noise(model, originals, noise_pairs, noise_res) -> None:
    src, _ = noise_pairs
    with forward_sizes(model) as sizes:
        table = apply_noise(model, originals[src], noise_res.noise)
    assert sizes == [400]
    assert table.shape == (20, 20)
    assert torch.equal(table.diagonal(), noise_res.predicted)  # own noise on own image
    zero = apply_noise(model, originals, torch.zeros(3, 1, 28, 28))
    assert torch.equal(zero, torch.arange(10)[:, None].expand(10, 3))  # correctly classified


def test_transfer_rates_on_a_hand_made_table() -> None:
    """Three noises (targets 0, 1, 2) learned on an image of class 1, applied to four
    images; a pair whose image is already of the noise's target counts for neither rate."""
    labels = torch.tensor([1, 1, 2, 0])
    table = torch.tensor(
        [
            [0, 1, 1],  # class 1: ->0 hit, ->1 own class (left out), ->2 missed
            [0, 1, 2],  # class 1: ->0 hit, ->1 left out, ->2 hit
            [2, 1, 2],  # class 2: ->0 missed, ->1 hit, ->2 left out
            [0, 0, 2],  # class 0: ->0 left out, ->1 missed, ->2 hit
        ]
    )
    rates = transfer_rates(table, labels, source=1)
    assert rates == {"same_class_rate": 3 / 4, "other_class_rate": 2 / 4}
    # counting the left-out pairs would give 5/6 and 4/6: the exclusion is what is tested
    only_same = transfer_rates(table[:2], labels[:2], source=1)
    assert only_same == {"same_class_rate": 3 / 4, "other_class_rate": 0.0}  # none: 0.0


def test_transfer_rates_match_a_pair_by_pair_count() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (40,), generator=gen)
    table = torch.randint(0, 10, (40, 10), generator=gen)
    table[::3] = torch.arange(10)  # some images go to every target
    rates = transfer_rates(table, labels, source=5)
    counts = {"same_class_rate": [0, 0], "other_class_rate": [0, 0]}
    for m in range(len(labels)):
        key = "same_class_rate" if labels[m] == 5 else "other_class_rate"
        for k in range(10):
            if labels[m] != k:
                counts[key][0] += int(table[m, k] == k)
                counts[key][1] += 1
    for key, (hits, total) in counts.items():
        assert total and rates[key] == pytest.approx(hits / total), key


# --------------------------------------------------------------------------- FGSM / PGD


def test_eps_zero_changes_nothing(model, test_set) -> None:
    x, y = test_set
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(fgsm(model, x, y, eps=0.0), x)
    for early_stop in (True, False):
        assert torch.equal(
            pgd(
                model,
                x,
                y,
                eps=0.0,
                steps=5,
                step_size=0.0,
                random_start=True,
                early_stop=early_stop,
                gen=gen,
            ),
            x,
        )
    assert torch.equal(
        pgd_textbook(model, x, y, eps=0.0, steps=5, step_size=0.0, random_start=True, gen=gen), x
    )


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_attacks_stay_in_eps_ball_and_pixel_range(model, test_set, eps: float) -> None:
    x, y = test_set
    gen = torch.Generator().manual_seed(0)
    advs = {
        "fgsm": fgsm(model, x, y, eps=eps, batch_size=64),
        "pgd": pgd(
            model,
            x,
            y,
            eps=eps,
            steps=10,
            step_size=eps / 4,
            random_start=True,
            early_stop=True,
            gen=gen,
            batch_size=64,
        ),
        "textbook": pgd_textbook(
            model, x, y, eps=eps, steps=10, step_size=eps / 2, random_start=True, gen=gen
        ),
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
        early = pgd(
            model,
            x,
            y,
            eps=eps,
            steps=steps,
            step_size=step,
            random_start=True,
            early_stop=True,
            gen=torch.Generator().manual_seed(7),
            batch_size=64,
        )
    with forward_sizes(model) as full_rows:
        full = pgd_textbook(
            model,
            x,
            y,
            eps=eps,
            steps=steps,
            step_size=step,
            random_start=True,
            gen=torch.Generator().manual_seed(7),
            batch_size=64,
        )
    acc_early, acc_full = accuracy(model, early, y), accuracy(model, full, y)
    assert acc_early <= acc_full
    assert acc_full - acc_early <= 0.05  # the same attack, only stopped earlier
    assert sum(full_rows) == steps * len(x)
    assert sum(early_rows) < 0.8 * sum(full_rows)
    # images the early-stopping attack did not fool followed the textbook trajectory
    robust = predict(model, early) == y
    same = (early[robust] == full[robust]).flatten(1).all(1).float().mean()
    assert same >= 0.9


def test_pgd_robust_accuracy_falls_with_eps(model, test_set) -> None:
    x, y = test_set
    grid = [0.0, 0.05, 0.1, 0.2, 0.3]
    attack = pgd_attack(
        model,
        steps=10,
        step_ratio=0.25,
        random_start=True,
        early_stop=True,
        gen=torch.Generator().manual_seed(0),
    )
    curve = robustness_curve(model, x, y, eps_grid=grid, attack=attack, batch_size=64)
    assert [r["eps"] for r in curve] == grid
    acc = [r["robust_accuracy"] for r in curve]
    assert all(a >= b for a, b in zip(acc, acc[1:], strict=False)), acc
    assert acc[0] == pytest.approx(accuracy(model, x, y))
    assert acc[-1] < 0.5 * acc[0]
    assert curve[0]["mean_l2_success"] == 0.0  # at eps 0 only clean mistakes, unmoved
    for r in curve[1:]:  # an L-inf ball of radius eps lies in an L2 ball of 28 * eps
        assert 0 < r["mean_l2_success"] <= 28 * r["eps"] + 1e-4
        assert 0 < r["mean_linf_success"] <= r["eps"] + 1e-6
    fgsm_curve = robustness_curve(
        model, x, y, eps_grid=grid, attack=fgsm_attack(model), batch_size=64
    )
    assert all(
        p["robust_accuracy"] <= f["robust_accuracy"] for p, f in zip(curve, fgsm_curve, strict=True)
    )


# ------------------------------------------------- class images from a seed, and their judges


@pytest.fixture(scope="module")
def train_small() -> tuple[torch.Tensor, torch.Tensor]:
    """The committed training subset: uint8 (3000, 28, 28) and its labels."""
    return load_small("train")


def test_project_l2_keeps_the_ball_and_the_pixel_range() -> None:
    gen = torch.Generator().manual_seed(0)
    center = torch.rand((8, 1, 28, 28), generator=gen)
    x = center + 2 * torch.randn((8, 1, 28, 28), generator=gen)  # far outside the ball
    x[0] = center[0]  # a point at the center stays there (no division by a zero norm)
    x[1] = (center[1] + 0.01).clamp(0, 1)  # inside the ball and the range: unchanged
    eps = 3.0
    p = project_l2(x, center, eps)
    dist = (p - center).flatten(1).norm(dim=1)
    assert (dist <= eps + 1e-5).all()
    assert (dist[2:] > eps - 1.5).all()  # far points land near the sphere (clamp may shorten)
    assert p.min() >= 0 and p.max() <= 1
    assert torch.equal(p[0], center[0]) and torch.allclose(p[1], x[1])


def test_class_mean_seed_is_the_mean_of_that_class(train_small) -> None:
    images, labels = train_small
    means = class_means(images, labels)
    assert means.shape == (10, 1, 28, 28)
    for k in range(10):
        direct = images[labels == k].double().mean(0) / 255  # (28, 28)
        torch.testing.assert_close(means[k, 0].double(), direct, rtol=0, atol=1e-6)
    gen = torch.Generator().manual_seed(0)
    kw = dict(noise_mean=0.5, noise_std=0.1, gen=gen)
    assert torch.equal(seeds("class_mean", train_small, **kw), means)
    grand = seeds("mean", train_small, **kw)
    assert (grand == grand[:1]).all()  # the same seed for every class
    torch.testing.assert_close(
        grand[0, 0].double(), images.double().mean(0) / 255, atol=1e-6, rtol=0
    )
    noise = seeds("noise", train_small, **kw)
    assert noise.shape == (10, 1, 28, 28) and 0.45 < noise.mean() < 0.55
    with pytest.raises(ValueError, match="init"):
        seeds("zeros", train_small, **kw)


def test_vote_is_the_majority_and_a_tie_goes_to_the_nearer_class() -> None:
    labels = torch.tensor([[3, 5, 5, 3, 1], [1, 2, 2, 3, 4], [7, 8, 9, 0, 1], [4, 6, 6, 6, 4]])
    assert vote(labels).tolist() == [3, 2, 7, 6]


def test_knn_judge_reads_real_digits_and_not_noise(mnist, train_small) -> None:
    """Test digits sit among training digits of their class; blank and noise images sit
    among one class whatever they were meant as, and far from every digit."""
    _, (test_x, test_y) = mnist
    x, y = test_x[:300], test_y[:300]
    real = judge(x, y, train_small, k=5)
    assert real.knn_correct.float().mean() > 0.85
    intended = torch.arange(10)
    blank = judge(torch.zeros(10, 1, 28, 28), intended, train_small, k=5)
    assert blank.knn_correct.sum() <= 1  # one vote for all ten: at most one is right
    noise = judge(
        torch.rand((10, 1, 28, 28), generator=torch.Generator().manual_seed(0)),
        intended,
        train_small,
        k=5,
    )
    assert noise.knn_correct.float().mean() <= 0.3
    assert noise.nearest_l2.min() > 2 * real.nearest_l2.median()
    # a training digit is its own nearest neighbour: distance 0 (up to cdist's rounding)
    own = judge(train_small[0][:10], train_small[1][:10], train_small, k=1)
    assert own.nearest_l2.max() < 1e-2 and own.knn_correct.all()


def test_seeded_synthesis_stays_in_its_ball_and_raises_the_class_score(model, train_small) -> None:
    seed = seeds("mean", train_small, noise_mean=0.5, noise_std=0.1, gen=torch.Generator())
    kw = dict(eps=2.0, steps=15, step_size=0.4, objective="ce")
    with forward_sizes(model) as sizes:
        images, cost, logits = synthesize(model, seed, **kw)
    assert sizes == [10] * 16  # every class in one batch: one forward per step, one at the end
    dist = (images - seed).flatten(1).norm(dim=1)
    assert (dist <= 2.0 + 1e-5).all() and (dist > 1.0).all()  # moved, but not past eps
    assert images.min() >= 0 and images.max() <= 1
    assert cost.shape == (16, 10)
    target = torch.arange(10)
    with torch.no_grad(), frozen(model):  # eval mode, as the ascent uses it
        before = model(seed).log_softmax(1)[target, target]
    after = logits.log_softmax(1)[target, target]
    assert (after > before).all()  # the class's log-softmax, the objective, rose for all
    assert (logits.argmax(1) == target).float().mean() >= 0.8
    again, _, _ = synthesize(model, seed, **kw)
    assert torch.equal(images, again)


def test_class_model_stage_judges_both_image_sets(model, train_small, mnist) -> None:
    _, test = mnist
    params = params_with(
        {
            "attacks": {
                "class_model": {
                    "steps": 5,
                    "synthesis": {"steps": 5, "step_size": 0.5, "eps_l2": 1.0},
                    "knn_k": 3,
                }
            }
        }
    )

    def run(train=train_small):
        gen = torch.Generator().manual_seed(0)
        return class_model_compute(AttackInputs(model, test, params, gen, "cpu", train))

    out = run()
    a, m = out.arrays, out.metrics
    for key in ("images", "seeded_images", "seeds"):
        assert a[key].shape == (10, 1, 28, 28), key
    for key in ("knn_class", "nearest_l2", "seeded_knn_class", "seed_knn_class", "seed_nearest_l2"):
        assert a[key].shape == (10,), key
    moved = ((a["seeded_images"] - a["seeds"]).reshape(10, -1) ** 2).sum(1) ** 0.5
    assert moved.max() <= 1.0 + 1e-5 and m["seeded"]["moved_l2"] == pytest.approx(moved.mean())
    intended = torch.arange(10)
    assert m["knn_accuracy"] == pytest.approx(
        float((torch.from_numpy(a["knn_class"]) == intended).float().mean())
    )
    assert m["seeded"]["knn_accuracy"] == pytest.approx(
        float((torch.from_numpy(a["seeded_knn_class"]) == intended).float().mean())
    )
    assert m["seeded"]["seed_nearest_l2"] == pytest.approx(float(a["seed_nearest_l2"].mean()))
    for prefix, images in (("", "images"), ("seeded_", "seeded_images"), ("seed_", "seeds")):
        # judged in one pass, each set keeps its own verdicts
        alone = judge(torch.from_numpy(a[images]), intended, train_small, k=3)
        assert alone.knn_class.tolist() == a[f"{prefix}knn_class"].tolist(), prefix
        torch.testing.assert_close(alone.nearest_l2, torch.from_numpy(a[f"{prefix}nearest_l2"]))
    assert set(out.figures) == {"class_images", "class_cost"}
    for fig in out.figures.values():
        plt.close(fig)
    again = run()
    for key, value in out.arrays.items():  # same params and seed: identical arrays
        assert (value == again.arrays[key]).all(), key
    for fig in again.figures.values():
        plt.close(fig)
    with pytest.raises(ValueError, match="training split"):
        run(train=None)


# --------------------------------------------------------------------------- picking images


def test_pick_per_class_is_seeded_and_correct(mnist, model) -> None:
    _, (images, labels) = mnist
    classes = [3, 1, 4, 1, 5, 9]
    idx = pick_per_class(images, labels, models=[model, model], classes=classes, seed=42)
    assert labels[idx].tolist() == classes and len(set(idx.tolist())) == len(classes)
    assert (predict(model, to_pixels(images[idx])) == labels[idx]).all()
    assert torch.equal(
        idx,
        pick_per_class(
            images, labels, models=model, classes=classes, seed=torch.Generator().manual_seed(42)
        ),
    )
    assert not torch.equal(
        idx, pick_per_class(images, labels, models=[model], classes=classes, seed=43)
    )
    # the models only veto: where the seed's first choice is correct, it is kept
    free = pick_images(images, labels, classes, seed=42)
    ok = predict(model, to_pixels(images[free])) == labels[free]
    assert ok.any() and torch.equal(free[ok], idx[ok])
    with pytest.raises(ValueError, match="class 7"):
        pick_images(images[labels != 7], labels[labels != 7], [7], seed=0)


def test_pick_transfer_images(mnist, model) -> None:
    _, (images, labels) = mnist
    kw = dict(
        source=5,
        n_same=6,
        n_other=4,
        seed=42,
        models=[model],
        exclude_classes=[3],
        exclude_indices=[0, 1, 2],
    )
    idx = pick_transfer_images(images, labels, **kw)
    got = labels[idx].tolist()
    assert got[:6] == [5] * 6
    assert len(set(got[6:])) == 4 and not {3, 5} & set(got[6:])
    assert len(set(idx.tolist())) == 10 and not {0, 1, 2} & set(idx.tolist())
    assert (predict(model, to_pixels(images[idx])) == labels[idx]).all()
    assert torch.equal(idx, pick_transfer_images(images, labels, **kw))


# --------------------------------------------------------------------------- figures


def image_axes(fig: Figure) -> int:
    return sum(1 for ax in fig.axes if ax.images)


def test_figures(originals, class_res, targeted_res, noise_pairs, noise_res, test_set) -> None:
    src, _ = noise_pairs
    x, y = test_set
    table = torch.randint(0, 10, (7, 10), generator=torch.Generator().manual_seed(0))
    curve = [{"eps": e, "robust_accuracy": 1 - e, "mean_l2_success": e} for e in (0, 0.1, 0.2)]
    expected = {
        "class_images": (class_figs.class_images(class_res), 10),
        "class_cost": (class_figs.class_cost(class_res), 0),
        "targeted_images": (
            targeted_figs.targeted_images(originals, targeted_res, 1, labels=list(range(10))),
            20,
        ),
        "targeted_grid": (targeted_figs.targeted_grid(originals, targeted_res), 40),
        "noise_images": (
            noise_figs.noise_images(originals[src[:10]], noise_res.subset(slice(10)), "to 3"),
            30,
        ),
        "transfer_table": (noise_figs.transfer_table(x[:7], y[:7], table, torch.arange(10)), 8),
        "robustness": (common_figs.robustness({"a": curve, "b": curve}, "PGD"), 0),
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


# ------------------------------------------------------------- random_noise, the baseline


def test_random_noise_is_weaker_than_pgd_and_keeps_the_worst_draw(model, test_set) -> None:
    """Random corners of the L-inf ball: an image counts as fooled if any draw fools it,
    so more draws never raise accuracy; at the same eps PGD, which follows the gradient,
    fools more."""
    from mnistlab.attacks.common.pgd import pgd_attack, robustness_curve
    from mnistlab.attacks.random_noise import random_sign_attack

    x, y = test_set
    acc = {}
    for draws in (1, 8):
        attack = random_sign_attack(
            model, draws=draws, gen=torch.Generator().manual_seed(0), batch_size=64
        )
        (row,) = robustness_curve(model, x, y, eps_grid=[0.3], attack=attack, batch_size=64)
        acc[draws] = row["robust_accuracy"]
        adv = attack(x, y, 0.3)
        assert (adv - x).abs().max() <= 0.3 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    pgd = pgd_attack(model, step_ratio=0.1, steps=10, random_start=False, early_stop=True, gen=None)
    (row,) = robustness_curve(model, x, y, eps_grid=[0.3], attack=pgd, batch_size=64)
    assert acc[8] <= acc[1]
    assert row["robust_accuracy"] < acc[8]
    clean = robustness_curve(model, x, y, eps_grid=[0.0], attack=attack, batch_size=64)
    assert clean[0]["robust_accuracy"] == pytest.approx(accuracy(model, x, y))
