"""Tests of the L-inf Square Attack on tiny models and random images: no MNIST, no
training, a fraction of a second each on one CPU thread, deterministic run to run."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from helpers.synthetic import RowCounter, tiny_cnn
from mnistlab.attacks.strong.square import margin, p_selection, square, square_side

TOL = 1e-6  # float slack of (x + eps) - x
EPS = 0.04  # on the linear model: 60 queries break a few of the 16 images, at various times


class PixelLinear(nn.Module):
    """Random linear logits ``W x + b`` computed as a broadcast product and a sum over the
    pixels (no matrix multiply), so an image's logits are bitwise the same in any batch:
    the tests that compare runs on different batches need that."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(10, 784, generator=gen) / 28)
        self.b = nn.Parameter(torch.zeros(10))

    def forward(self, x: Tensor) -> Tensor:
        return (x.flatten(1)[:, None, :] * self.w).sum(-1) + self.b


class Recorder(nn.Module):
    """Fixed logits, class 0 ahead by 1 (the margin never drops, so no square is ever
    accepted); records every batch it is asked to classify."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.batches.append(x.clone())
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 1
        return logits


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linf(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).flatten(1).abs().amax(1)


def margins(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return margin(model(x), y)


@pytest.fixture(scope="module")
def linear_data() -> tuple[nn.Module, Tensor, Tensor]:
    """A random linear model and 16 random images labelled with its own predictions
    (clean accuracy 100%)."""
    model = PixelLinear().eval()
    x = torch.rand(16, 1, 28, 28, generator=gen(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_schedule_and_square_side() -> None:
    p = [p_selection(0.8, i, 10000) for i in (0, 10, 11, 50, 51, 200, 201, 8000, 8001, 9999)]
    assert p == [0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.8 / 256, 0.8 / 512, 0.8 / 512]
    # rescaled to 1000 queries: iteration i counts as int(i * 10)
    assert [p_selection(0.8, i, 1000) for i in (1, 2, 5, 6)] == [0.8, 0.4, 0.4, 0.2]
    assert square_side(0.8) == 25  # round(sqrt(0.8 * 784)) = round(25.04)
    assert square_side(1.0) == 27  # capped below the full image
    assert square_side(0.8 / 512) == 1  # round(1.107) and never below 1
    assert square_side(1e-6) == 1


def test_outputs_valid_and_model_untouched() -> None:
    torch.manual_seed(0)  # parameter initialisation
    model = tiny_cnn()
    x = torch.rand(12, 1, 28, 28, generator=gen(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[-2:] = (y[-2:] + 1) % 10  # two clean mistakes
    eps = torch.linspace(0, 0.2, len(x))  # per-image radius, the first one 0
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    adv, q = square(model, x, y, eps=eps, n_queries=30, generator=gen())
    assert adv.shape == x.shape and q.shape == (len(x),) and q.dtype == torch.long
    assert adv.min() >= 0 and adv.max() <= 1
    assert bool((linf(adv, x) <= eps + TOL).all())
    # every pixel sits on a corner of the box: clamp(x + eps) or clamp(x - eps), or
    # the image is the clean one
    e4 = eps.view(-1, 1, 1, 1)
    corner = (adv == (x + e4).clamp(0, 1)) | (adv == (x - e4).clamp(0, 1))
    assert bool((corner.flatten(1).all(1) | (linf(adv, x) == 0)).all())
    assert torch.equal(adv[0], x[0]) and q[0] == 0  # eps 0: unchanged, no query
    assert torch.equal(adv[-2:], x[-2:]) and bool((q[-2:] == 0).all())  # clean mistakes
    assert bool((q[1:-2] >= 1).all()) and bool((q <= 30).all())
    assert model.training  # mode restored
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    # eps 0 everywhere: nothing is queried at all
    counted = RowCounter(model)
    adv0, q0 = square(counted, x, y, eps=0.0, n_queries=30, generator=gen())
    assert torch.equal(adv0, x) and not bool(q0.any()) and counted.rows == 0


def test_deterministic_float_eps_and_seed(linear_data) -> None:
    model, x, y = linear_data
    a1, q1 = square(model, x, y, eps=EPS, n_queries=40, generator=gen(3))
    a2, q2 = square(model, x, y, eps=torch.full((len(x),), EPS), n_queries=40, generator=gen(3))
    assert torch.equal(a1, a2) and torch.equal(q1, q2)
    a3, _ = square(model, x, y, eps=EPS, n_queries=40, generator=gen(4))
    assert not torch.equal(a1, a3)  # the generator is really used


def test_independent_of_batch_composition(linear_data) -> None:
    model, x, y = linear_data
    y = y.clone()
    y[[2, 12]] = (y[[2, 12]] + 1) % 10  # clean mistakes
    eps = torch.full((len(x),), EPS)
    eps[10] = 0.0
    eps[14] = 0.2  # breaks early: the set of images queried changes
    a_all, q_all = square(model, x, y, eps=eps, n_queries=60, generator=gen(7))
    a_half, q_half = square(model, x[:8], y[:8], eps=eps[:8], n_queries=60, generator=gen(7))
    assert torch.equal(a_all[:8], a_half) and torch.equal(q_all[:8], q_half)
    assert len(set(q_all.tolist())) > 2  # images really stopped at different times


def test_query_accounting(linear_data) -> None:
    model, x, y = linear_data
    y = y.clone()
    y[:3] = (y[:3] + 1) % 10  # clean mistakes
    counted = RowCounter(model)
    adv, q = square(counted, x, y, eps=EPS, n_queries=50, generator=gen())
    assert bool((q[:3] == 0).all()) and torch.equal(adv[:3], x[:3])
    assert bool((q[3:] >= 1).all()) and bool((q <= 50).all())
    assert q.max() == 50 and q.min() < 50  # some images ran out, some stopped early
    # every forward pass is counted, except the one clean pass per image
    assert counted.rows == int(q.sum()) + len(x)


@pytest.mark.parametrize("p_init", [1 / 784, 0.8])
def test_every_query_changes_one_square(p_init: float) -> None:
    model = Recorder()
    x = torch.rand(3, 1, 28, 28, generator=gen(2))
    y = torch.zeros(3, dtype=torch.long)
    n_queries = 40
    _, q = square(model, x, y, eps=0.1, n_queries=n_queries, generator=gen(), p_init=p_init)
    assert bool((q == n_queries).all())  # never broken
    clean, start, *cands = model.batches
    assert torch.equal(clean, x) and len(cands) == n_queries - 1
    diffs = [(cand != start).squeeze(1) for cand in cands]  # (3, 28, 28): none accepted
    assert any(not torch.equal(d[0], d[1]) for d in diffs)  # each image has its own square
    for i, diff in enumerate(diffs):
        rows, cols = diff.any(2), diff.any(1)  # (3, 28)
        side = square_side(p_selection(p_init, i, n_queries))
        # not a wasted query, and every change lies in one side x side square
        assert bool(rows.any(1).all())
        for r in (rows, cols):
            first = r.float().argmax(1)
            last = 27 - r.flip(1).float().argmax(1)
            assert bool((last - first < side).all())
        if side == 1:
            assert bool((diff.sum((1, 2)) == 1).all())


def test_breaks_an_easy_model(linear_data) -> None:
    model, x, y = linear_data
    clean = margins(model, x, y)
    adv, q = square(model, x, y, eps=0.1, n_queries=100, generator=gen())
    m = margins(model, adv, y)
    broken = m < 0
    assert bool((clean >= 0).all())
    assert float(broken.float().mean()) >= 0.75  # clean accuracy is 100%
    assert bool((m <= clean + 1e-5).all())
    assert float(q[broken].float().mean()) < 50  # early stop: broken images cost little


def test_never_worse_than_clean(linear_data) -> None:
    # With one query (the stripes alone) the start is worse than clean for some images:
    # those come back clean, the others as the start.
    model, x, y = linear_data
    clean = margins(model, x, y)
    adv, q = square(model, x, y, eps=EPS, n_queries=1, generator=gen())
    assert bool((q == 1).all())
    m = margins(model, adv, y)
    assert bool((m <= clean + 1e-5).all())
    back = linf(adv, x) == 0
    assert 0 < int(back.sum()) < len(x)


def test_early_stop_changes_cost_not_result(linear_data) -> None:
    model, x, y = linear_data
    n_queries = 60
    counted = RowCounter(model)
    a_fast, q_fast = square(counted, x, y, eps=EPS, n_queries=n_queries, generator=gen(7))
    fast_rows, counted.rows = counted.rows, 0
    a_full, q_full = square(
        counted, x, y, eps=EPS, n_queries=n_queries, generator=gen(7), early_stop=False
    )
    assert bool((q_full == n_queries).all())  # every image attacked to the end
    assert counted.rows == (n_queries + 1) * len(x)
    assert fast_rows < counted.rows
    broken_fast = margins(model, a_fast, y) < 0
    m_full = margins(model, a_full, y)
    broken_full = m_full < 0
    assert 0 < int(broken_fast.sum()) < len(x)  # the attack is not trivial here
    # same trajectories: the same images break, an image that did not break got the
    # same result, and a broken one only went further below 0
    assert torch.equal(broken_fast, broken_full)
    assert torch.equal(a_fast[~broken_fast], a_full[~broken_fast])
    assert torch.equal(q_fast[~broken_fast], q_full[~broken_fast])
    assert bool((q_fast[broken_fast] < n_queries).all())
    assert bool((m_full <= margins(model, a_fast, y) + 1e-5).all())
