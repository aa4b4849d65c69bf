"""Tests of the strong evaluation (APGD ensemble, minimal eps) and adversarial training.

Everything runs on tiny models and synthetic data (see conftest.py), each test in a
few seconds on one CPU thread. Randomness comes from seeded generators, so every
test is deterministic run to run; where an assertion compares random attacks, the
tolerance is stated next to it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.synthetic import RowCounter, blobs, fit, tiny_cnn
from mnistlab.attacks.strong.apgd import (
    apgd,
    checkpoints,
    minimal_eps,
    strong_attack,
    strong_attack_fn,
)
from mnistlab.core.tensors import predict
from mnistlab.train.adversarial import apgd_ce_accuracy, eps_at, perturb, trades_loss


@pytest.fixture(scope="session")
def blob_model() -> nn.Module:
    """Tiny CNN trained 300 steps on 2000 blob images (clean accuracy ~100%; attacks
    at eps 0.07-0.09 break roughly half of the images, so they are not trivial)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # parameter initialisation
    x, y = blobs(2000, gen)
    return fit(tiny_cnn(), x, y, steps=300, gen=gen)


@pytest.fixture(scope="session")
def blob_test() -> tuple[Tensor, Tensor]:
    """60 held-out blob images and labels."""
    return blobs(60, torch.Generator().manual_seed(1))


TOL = 1e-6  # float slack of (x + eps) - x


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linf(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).flatten(1).abs().amax(1)


def pgd_reference(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    generator: torch.Generator,
) -> Tensor:
    """Textbook L-inf PGD on the cross-entropy: uniform start, signed steps, projection."""
    model.eval()
    adv = (x + (2 * torch.rand(x.shape, generator=generator) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(adv), y, reduction="sum"), adv)
        adv = torch.min(torch.max(adv.detach() + step_size * g.sign(), x - eps), x + eps)
        adv = adv.clamp(0, 1)
    return adv.detach()


def acc(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((predict(model, x) == y).float().mean())


# --------------------------------------------------------------------------- APGD


def test_checkpoint_schedule() -> None:
    # p: 0, .22, .41, .57, .70, .80, .87, .93, .99 (interval shrinks by .03, floor .06)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [1]
    assert all(b > a for a, b in zip(checkpoints(37), checkpoints(37)[1:], strict=False))


@pytest.mark.parametrize("loss", ["ce", "dlr_t"])
def test_apgd_outputs_valid_and_model_untouched(blob_model: nn.Module, blob_test, loss) -> None:
    x, y = blob_test
    eps = torch.linspace(0, 0.2, len(x))  # per-image radius, first one 0
    blob_model.train()
    flags = [p.requires_grad for p in blob_model.parameters()]
    target = (y + 1) % 10 if loss == "dlr_t" else None
    adv = apgd(blob_model, x, y, eps=eps, loss=loss, target=target, n_iter=20, generator=gen())
    assert adv.shape == x.shape
    assert adv.min() >= 0 and adv.max() <= 1
    assert bool((linf(adv, x) <= eps + TOL).all())
    assert torch.equal(adv[0], x[0])  # eps 0: unchanged
    assert blob_model.training  # mode restored
    assert [p.requires_grad for p in blob_model.parameters()] == flags
    assert all(p.grad is None for p in blob_model.parameters())
    blob_model.eval()
    # a float eps is the same as a constant tensor, and the generator fixes the result
    a1 = apgd(blob_model, x, y, eps=0.1, loss=loss, target=target, n_iter=20, generator=gen(3))
    a2 = apgd(
        blob_model,
        x,
        y,
        eps=torch.full((len(x),), 0.1),
        loss=loss,
        target=target,
        n_iter=20,
        generator=gen(3),
    )
    assert torch.equal(a1, a2)


@pytest.mark.parametrize("eps", [0.07, 0.09])
def test_apgd_not_weaker_than_pgd(blob_model: nn.Module, blob_test, eps: float) -> None:
    x, y = blob_test
    n_iter = 50
    pgd_acc = acc(
        blob_model,
        pgd_reference(blob_model, x, y, eps=eps, steps=n_iter, step_size=eps / 4, generator=gen(1)),
        y,
    )
    res = strong_attack(blob_model, x, y, eps=eps, n_iter=n_iter, generator=gen(2))
    ce_acc = acc(blob_model, apgd(blob_model, x, y, eps=eps, n_iter=n_iter, generator=gen(2)), y)
    assert 0.1 < pgd_acc < 0.9  # the attacks are not trivial on this model
    # The ensemble (same iterations per run) is never weaker than PGD...
    assert res.robust_accuracy <= pgd_acc
    # ... and APGD-CE alone, same budget as PGD, matches it: on this near-linear model
    # both reach the same optimum (checked: identical to the authors' APGD code), so
    # a single random start may differ by an image or two.
    assert ce_acc <= pgd_acc + 2 / len(x)


def test_early_stop_costs_little_and_loses_nothing(blob_model: nn.Module, blob_test) -> None:
    x, y = blob_test
    counted = RowCounter(blob_model)
    a_fast = apgd(counted, x, y, eps=0.12, n_iter=50, generator=gen(), early_stop=True)
    fast_rows, counted.rows = counted.rows, 0
    a_full = apgd(counted, x, y, eps=0.12, n_iter=50, generator=gen(), early_stop=False)
    full_rows = counted.rows
    assert full_rows == 51 * len(x)
    assert fast_rows < 0.5 * full_rows  # most images break early at this eps
    # every image fooled without early stop is fooled with it (same trajectories)
    fooled_full = predict(blob_model, a_full) != y
    fooled_fast = predict(blob_model, a_fast) != y
    assert bool((fooled_fast | ~fooled_full).all())


# --------------------------------------------------------------------------- ensemble


def test_eps_zero_is_clean_accuracy(blob_model: nn.Module, blob_test) -> None:
    x, y = blob_test
    y = y.clone()
    y[:7] = (y[:7] + 3) % 10  # some clean mistakes
    clean = predict(blob_model, x) == y
    res = strong_attack(blob_model, x, y, eps=0.0, n_iter=10, generator=gen())
    assert torch.equal(res.robust, clean)
    assert torch.equal(res.clean, clean)
    assert torch.equal(res.x_adv, x)
    # per-image eps: the eps-0 half is scored clean, the other half is attacked
    eps = torch.where(torch.arange(len(x)) % 2 == 0, 0.0, 0.15)
    res = strong_attack(blob_model, x, y, eps=eps, n_iter=20, generator=gen())
    assert torch.equal(res.robust[::2], clean[::2])
    assert not bool(res.robust[~clean].any())


@pytest.mark.parametrize("cascade", [True, False])
def test_strong_attack_worst_case(blob_model: nn.Module, blob_test, cascade: bool) -> None:
    x, y = blob_test
    eps = 0.08
    res = strong_attack(
        blob_model,
        x,
        y,
        eps=eps,
        n_iter=30,
        n_restarts=2,
        n_targets=3,
        batch_size=25,
        generator=gen(),
        cascade=cascade,
    )
    assert set(res.robust_by_attack) == {"apgd_ce", "apgd_dlr_t"}
    for r in res.robust_by_attack.values():
        assert bool((r | ~res.robust).all())  # robust -> robust under each component
    assert torch.equal(
        res.robust, res.clean & res.robust_by_attack["apgd_ce"] & res.robust_by_attack["apgd_dlr_t"]
    )
    # x_adv: valid, misclassified exactly where non-robust, the clean image where robust
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert bool((linf(res.x_adv, x) <= eps + TOL).all())
    assert torch.equal(predict(blob_model, res.x_adv) != y, ~res.robust)
    assert torch.equal(res.x_adv[res.robust], x[res.robust])
    assert 0 < res.robust_accuracy < 1 and res.seconds > 0
    # each restart / target only shrinks the robust set: worst case over all runs
    assert res.robust_accuracy <= res.accuracy("apgd_ce")


# --------------------------------------------------------------------------- minimal eps


def test_minimal_eps_bisection_exact() -> None:
    """A deterministic 'attack' with a known threshold per image checks the search."""
    n, hi, tol = 12, 0.5, 1 / 255
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x = torch.rand(n, 1, 28, 28, generator=gen())
    y = predict(model, x)
    y[0] = (y[0] + 1) % 10  # misclassified clean -> 0
    thr = torch.linspace(0.001, 0.7, n)  # flips iff eps >= thr; the last ones never (> hi)
    calls = []

    def attack(xs: Tensor, ys: Tensor, eps: Tensor) -> Tensor:
        rows = (xs.flatten(1)[:, None] == x.flatten(1)[None]).all(2).float().argmax(1)
        calls.append(len(xs))
        return eps < thr[rows]

    out = minimal_eps(model, x, y, attack=attack, hi=hi, tol=tol)
    assert out[0] == 0
    assert torch.isinf(out[1:][thr[1:] > hi]).all()
    ok = torch.isfinite(out) & (out > 0)
    assert bool((out[ok] >= thr[ok]).all()) and bool((out[ok] <= thr[ok] + tol).all())
    assert len(calls) == 1 + math.ceil(math.log2(hi / tol))  # one call per bisection step


def test_minimal_eps_with_strong_attack(blob_model: nn.Module, blob_test) -> None:
    x, y = blob_test
    x, y = x[:24], y[:24]
    tol = 1 / 255
    log: list[tuple[Tensor, Tensor, Tensor]] = []  # (image ids, eps, robust) per call
    strong = strong_attack_fn(blob_model, generator=gen(5), n_iter=20, n_targets=2)

    def attack(xs: Tensor, ys: Tensor, eps: Tensor) -> Tensor:
        rows = (xs.flatten(1)[:, None] == x.flatten(1)[None]).all(2).float().argmax(1)
        r = strong(xs, ys, eps)
        log.append((rows, eps.clone(), r.clone()))
        return r

    out = minimal_eps(blob_model, x, y, attack=attack, hi=0.3, tol=tol)
    assert bool(torch.isfinite(out).all()) and bool((out > 0).all())  # all clean-correct
    ids = torch.cat([c[0] for c in log])
    eps = torch.cat([c[1] for c in log])
    rob = torch.cat([c[2] for c in log])
    for i in range(len(x)):
        mine = ids == i
        # the returned eps is one at which the attack flipped the image ...
        assert bool((~rob[mine] & (eps[mine] == out[i])).any())
        # ... and the search saw the image survive within tol below it
        assert bool((rob[mine] & (eps[mine] >= out[i] - tol - TOL) & (eps[mine] < out[i])).any())
        # lo = largest robust eps < hi = smallest broken eps, over everything tried
        assert eps[mine & rob].max() < eps[mine & ~rob].min()
    # Monotonicity, checked with a fresh run of the same attack on a grid below the
    # result. Nothing guarantees it for a random attack (another random start may
    # find a smaller flip), so allow 5% of the (image, eps) pairs to break; in fact
    # it held for every pair with three different seeds on this model.
    fresh = strong_attack_fn(blob_model, generator=gen(6), n_iter=20, n_targets=2)
    grid = torch.cat([out * f for f in (0.25, 0.5, 0.75)])
    robust_below = fresh(x.repeat(3, 1, 1, 1), y.repeat(3), grid)
    assert robust_below.float().mean() >= 0.95
    # and most results still flip the image with the fresh run
    assert (~fresh(x, y, out)).float().mean() >= 0.9


# --------------------------------------------------------------------------- training side


def test_eps_at_ramp() -> None:
    assert eps_at(0, steps_per_epoch=10, eps=0.3, ramp_epochs=2) == 0.0
    assert eps_at(10, steps_per_epoch=10, eps=0.3, ramp_epochs=2) == pytest.approx(0.15)
    assert eps_at(20, steps_per_epoch=10, eps=0.3, ramp_epochs=2) == pytest.approx(0.3)
    assert eps_at(999, steps_per_epoch=10, eps=0.3, ramp_epochs=2) == pytest.approx(0.3)
    assert eps_at(0, steps_per_epoch=10, eps=0.3, ramp_epochs=0) == 0.3


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs", "trades"])
@pytest.mark.parametrize("bn", ["running", "batch"])
def test_perturb_contract(method: str, bn: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 13 * 13, 10),
    )
    model.train()
    model[1].requires_grad_(False)  # a frozen layer: flags must come back as they were
    flags = [p.requires_grad for p in model.parameters()]
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(16, 1, 28, 28, generator=gen())
    y = torch.randint(0, 10, (16,), generator=gen())
    adv = perturb(model, x, y, eps=0.1, method=method, steps=3, generator=gen(1), bn=bn)
    assert adv.min() >= 0 and adv.max() <= 1 and not adv.requires_grad
    assert bool((linf(adv, x) <= 0.1 + TOL).all())
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():  # weights and BN running statistics unchanged
        assert torch.equal(v, stats[k]), k
    again = perturb(model, x, y, eps=0.1, method=method, steps=3, generator=gen(1), bn=bn)
    assert torch.equal(adv, again)
    assert torch.equal(perturb(model, x, y, eps=0.0, method=method, generator=gen()), x)


def two_feature_data(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two classes. A robust feature: a 4x4 patch at 0 or 1 (margin 1 >> 2 eps) that
    agrees with the label 90% of the time; a non-robust one: +-0.06 times a fixed
    +-1 pattern over the whole image (always right, but far below eps), plus noise.
    Natural training rides the non-robust feature; a robust model must use the patch."""
    y = torch.randint(0, 2, (n,), generator=g)
    sign = torch.where(torch.rand(28, 28, generator=gen(123)) < 0.5, -1.0, 1.0)
    x = 0.5 + 0.06 * (2 * y.float() - 1)[:, None, None] * sign
    x = x + 0.1 * (2 * torch.rand(n, 28, 28, generator=g) - 1)
    flip = torch.rand(n, generator=g) > 0.9
    x[:, 2:6, 2:6] = torch.where(flip, 1 - y, y).float()[:, None, None]
    return x.clamp(0, 1)[:, None], y


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs", "trades"])
def test_adversarial_training_raises_robust_accuracy(method: str) -> None:
    eps, steps, spe = 0.15, 150, 15
    results = {}
    for mode in ("natural", method):
        g = gen(0)
        torch.manual_seed(0)
        xtr, ytr = two_feature_data(1000, g)
        xte, yte = two_feature_data(300, g)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 2))
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        for step in range(steps):
            i = torch.randint(0, len(xtr), (64,), generator=g)
            xb, yb = xtr[i], ytr[i]
            if mode != "natural":
                e = eps_at(step, steps_per_epoch=spe, eps=eps, ramp_epochs=2)
                xa = perturb(model, xb, yb, eps=e, method=method, steps=5, generator=g)
                if method == "trades":
                    loss = trades_loss(model, xb, xa, yb, beta=6.0)
                else:
                    loss = F.cross_entropy(model(xa), yb)
            else:
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        results[mode] = (
            acc(model, xte, yte),
            apgd_ce_accuracy(model, xte, yte, eps=eps, n_iter=20, generator=gen(9), batch_size=128),
        )
    nat_clean, nat_pgd = results["natural"]
    adv_clean, adv_pgd = results[method]
    assert nat_clean > 0.95 and nat_pgd < 0.3  # accurate but brittle
    assert adv_pgd > 0.8 and adv_pgd > nat_pgd + 0.5  # the patch survives eps 0.15


def test_trades_loss_is_its_formula() -> None:
    """``CE(f(x), y) + beta * KL(p(x) || p(x'))``, batch means, written out by hand; and
    its gradient reaches the parameters through both predictions."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x = torch.rand(5, 1, 28, 28, generator=gen(1))
    x_adv = (x + 0.3 * (2 * torch.rand(x.shape, generator=gen(2)) - 1)).clamp(0, 1)
    y = torch.tensor([0, 3, 3, 7, 9])
    for beta in (0.0, 1.0, 6.0):
        got = trades_loss(model, x, x_adv, y, beta=beta)
        with torch.no_grad():
            p = torch.softmax(model(x), 1)
            q = torch.softmax(model(x_adv), 1)
            ce = -torch.log(p[torch.arange(5), y])
            kl = (p * (torch.log(p) - torch.log(q))).sum(1)
            want = ce.mean() + beta * kl.mean()
        assert float(got) == pytest.approx(float(want), rel=1e-5)
    got.backward()
    w = model[1].weight.grad
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert not torch.allclose(w, model[1].weight.grad)  # the KL term adds its own


def test_trades_perturbation_ascends_the_kl() -> None:
    """TRADES crafts away from the clean prediction: the KL grows with more steps, from a
    start that is almost the clean image, and never needs the label."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.rand(32, 1, 28, 28, generator=gen(1))
    y = torch.randint(0, 10, (32,), generator=gen(2))

    def kl(adv: Tensor) -> float:
        with torch.no_grad():
            return float(
                F.kl_div(
                    F.log_softmax(model(adv), 1),
                    F.log_softmax(model(x), 1),
                    log_target=True,
                    reduction="batchmean",
                )
            )

    start = perturb(model, x, y, eps=0.3, method="trades", steps=0, generator=gen(3))
    assert float(linf(start, x).max()) < 0.01 and kl(start) < 1e-3
    kls = [
        kl(perturb(model, x, y, eps=0.3, method="trades", steps=k, generator=gen(3)))
        for k in (1, 5)
    ]
    assert kl(start) < kls[0] < kls[1]
    other = perturb(model, x, (y + 1) % 10, eps=0.3, method="trades", steps=5, generator=gen(3))
    assert torch.equal(
        other, perturb(model, x, y, eps=0.3, method="trades", steps=5, generator=gen(3))
    )


# --------------------------------------------------------------------------- ART


def test_cross_check_with_art(blob_model: nn.Module, blob_test) -> None:
    """Our ensemble against ART's AutoProjectedGradientDescent.

    ART's APGD with the cross-entropy loss is the directly comparable component
    (APGD-CE, the first attack of AutoAttack); ART's AutoAttack would run many more
    attacks and is slow. ART starts at ``eps_step``, set to 2 * eps as in the paper.
    """
    # ART is pinned in requirements.lock: a missing one fails here, it never skips
    import art.attacks.evasion as art_attacks
    import art.estimators.classification as art_cls

    x, y = blob_test
    eps, n_iter = 0.08, 50
    clf = art_cls.PyTorchClassifier(
        model=blob_model,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    attack = art_attacks.AutoProjectedGradientDescent(
        estimator=clf,
        norm=np.inf,
        eps=eps,
        eps_step=2 * eps,
        max_iter=n_iter,
        targeted=False,
        nb_random_init=1,
        batch_size=len(x),
        loss_type="cross_entropy",
        verbose=False,
    )
    np.random.seed(0)  # ART draws its random start from numpy's global generator
    x_art = torch.from_numpy(attack.generate(x=x.numpy(), y=y.numpy()))
    assert bool((linf(x_art, x) <= eps + 1e-5).all())
    art_acc = acc(blob_model, x_art, y)
    res = strong_attack(blob_model, x, y, eps=eps, n_iter=n_iter, generator=gen())
    assert 0.1 < art_acc < 0.9
    assert res.robust_accuracy <= art_acc + 1 / len(x)  # at least as strong (1 image slack)
    assert abs(res.accuracy("apgd_ce") - art_acc) <= 0.05  # same attack: close
    assert abs(res.robust_accuracy - art_acc) <= 0.1


def test_worst_case_adds_square_on_what_apgd_left(blob_model: nn.Module, blob_test) -> None:
    """The strong stage's ensemble: each member attacks what the ones before it left,
    Square last; its queries go only to the images the gradient members left. On a
    model that masks its gradient (pixels rounded to 1/8: zero gradient almost
    everywhere) the gradient members stall and Square, which only queries, does not."""
    from helpers.params import REPO
    from mnistlab.attacks.strong import worst_case
    from mnistlab.core.config import load_params

    x, y = blob_test

    class Masked(nn.Module):
        def forward(self, v: Tensor) -> Tensor:
            return blob_model(torch.round(v * 8) / 8)

    model = Masked()
    small = {"pgd_steps": 10, "n_iter": 20, "n_targets": 1, "batch_size": 25}
    cfg = load_params(REPO / "params.yaml").attacks.strong.model_copy(
        update={**small, "square_queries": 300}
    )
    ok = worst_case(model, x, y, eps=0.1, cfg=cfg, gen=gen(3))
    chain = [ok[k] for k in ("clean", "pgd", "apgd_ce", "apgd", "strong")]
    for before, after in zip(chain, chain[1:], strict=False):
        assert bool((before | ~after).all())  # robust after -> robust before
    queries = ok["square_queries"]
    assert bool((queries[~ok["apgd"]] == 0).all())
    assert bool((queries[ok["apgd"]] >= 1).all()) and int(queries.max()) <= 300
    assert int(ok["strong"].sum()) < int(ok["apgd"].sum()) // 2  # Square broke what APGD left
    off = worst_case(
        model, x, y, eps=0.1, cfg=cfg.model_copy(update={"square_queries": 0}), gen=gen(3)
    )
    assert torch.equal(off["strong"], off["apgd"]) and int(off["square_queries"].sum()) == 0


def test_standard_budget_continues_on_what_the_cheaper_left(
    blob_model: nn.Module, blob_test
) -> None:
    """AutoAttack's standard budget runs after the cheaper ensemble, only on what it left:
    APGD-T on the further target classes, then a fresh Square run; only at its own eps."""
    from helpers.params import REPO
    from mnistlab.attacks.strong import worst_case
    from mnistlab.core.config import load_params

    x, y = blob_test

    class Masked(nn.Module):  # gradients stall (see above): Square's budget tells
        def forward(self, v: Tensor) -> Tensor:
            return blob_model(torch.round(v * 8) / 8)

    model = Masked()
    base = load_params(REPO / "params.yaml").attacks.strong
    small = {"pgd_steps": 10, "n_iter": 20, "n_targets": 1, "batch_size": 25, "square_queries": 10}
    std = base.standard.model_copy(update={"eps": [0.1], "n_targets": 9, "square_queries": 300})
    cfg = base.model_copy(update={**small, "eps": [0.1, 0.09], "standard": std})
    ok = worst_case(model, x, y, eps=0.1, cfg=cfg, gen=gen(3))
    chain = [ok[k] for k in ("clean", "pgd", "apgd", "strong", "standard_apgd", "standard")]
    for before, after in zip(chain, chain[1:], strict=False):
        assert bool((before | ~after).all())  # robust after -> robust before
    assert 0 < int(ok["standard"].sum()) < int(ok["strong"].sum())  # it found more
    # the same cheaper chain as without it: the standard budget only adds
    off = cfg.model_copy(update={"standard": std.model_copy(update={"eps": []})})
    alone = worst_case(model, x, y, eps=0.1, cfg=off, gen=gen(3))
    assert "standard" not in alone and torch.equal(alone["strong"], ok["strong"])
    assert "standard" not in worst_case(model, x, y, eps=0.09, cfg=cfg, gen=gen(3))


def test_first_target_skips_the_targets_already_attacked(blob_model: nn.Module, blob_test) -> None:
    x, y = blob_test
    clean = predict(blob_model, x) == y
    none_left = strong_attack(
        blob_model,
        x,
        y,
        eps=0.3,
        n_iter=10,
        n_restarts=0,
        n_targets=2,
        first_target=2,
        generator=gen(),
    )
    assert torch.equal(none_left.robust, clean)  # no attack ran
    last = strong_attack(
        blob_model,
        x,
        y,
        eps=0.08,
        n_iter=20,
        n_restarts=0,
        n_targets=3,
        first_target=2,
        generator=gen(),
    )
    first = strong_attack(
        blob_model, x, y, eps=0.08, n_iter=20, n_restarts=0, n_targets=1, generator=gen()
    )
    assert last.robust_accuracy < clean.float().mean()
    assert not torch.equal(last.robust, first.robust)  # another target class, other images


def test_params_standard_budget_is_autoattacks() -> None:
    """What README and the report set beside AutoAttack's table is measured at its standard
    budget: APGD-CE with 1 restart of 100 iterations, APGD-T on 9 targets, Square with 5,000
    queries, at eps 0.3 (Croce and Hein 2020, ``version='standard'``)."""
    from helpers.params import REPO
    from mnistlab.core.config import load_params

    strong = load_params(REPO / "params.yaml").attacks.strong
    assert strong.n_iter == 100 and strong.n_restarts >= 1
    assert strong.standard.n_targets == 9 and strong.standard.square_queries == 5000
    assert 0.3 in strong.standard.eps and strong.n_images >= 1000
