"""Tests of the attribution library on tiny models (each well under 10 s on one thread)."""

from __future__ import annotations

import copy
import io

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from helpers.params import params_with
from mnistlab.attribution import faithfulness, figures, methods, registry, sanity
from mnistlab.core.models import MnistCNN
from mnistlab.visualize import figures as visualize_figures
from mnistlab.visualize.occlusion import occlusion_maps


def TinyCNN() -> MnistCNN:  # noqa: N802 - reads like the class it builds
    """A miniature of the study's CNN: same layer names, 4 channels, 16 hidden units."""
    return MnistCNN(channels=4, hidden=16)


ATTRIBUTION_METHODS = registry(params_with({"attribution": {"ig_steps": 32}}).attribution)


def toy_digits(n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, 1, 28, 28)`` MNIST-like images: black, with a few bright random bars."""
    x = torch.zeros(n, 1, 28, 28)
    for k in range(n):
        for _ in range(3):
            r, c = torch.randint(4, 20, (2,), generator=generator).tolist()
            h, w = torch.randint(2, 9, (2,), generator=generator).tolist()
            x[k, 0, r : r + h, c : c + w] = 0.6 + 0.4 * torch.rand(1, generator=generator)
    return x


def toy_task(
    n: int, templates: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy, shifted copies of the 10 class ``templates`` ``(10, 1, 28, 28)``."""
    y = torch.randint(0, 10, (n,), generator=generator)
    scale = 0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=generator)
    x = (templates[y] * scale + 0.1 * torch.rand(n, 1, 28, 28, generator=generator)).clamp(0, 1)
    shift = torch.randint(-2, 3, (2,), generator=generator).tolist()
    return torch.roll(x, shift, (2, 3)), y


@pytest.fixture(scope="session")
def trained() -> tuple[TinyCNN, torch.Tensor, torch.Tensor]:
    """A TinyCNN briefly trained (60 Adam steps, ~2 s) on a toy 10-class task, and 4
    held-out images with their labels (all classified correctly)."""
    gen = torch.Generator().manual_seed(0)
    templates = toy_digits(10, gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        x, y = toy_task(64, templates, gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().requires_grad_(False)
    x, y = toy_task(4, templates, gen)
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), y)
    return model, x, y


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def tiny_model() -> TinyCNN:
    with torch.random.fork_rng():  # default init, seeded, global RNG left as it was
        torch.manual_seed(0)
        return TinyCNN().eval()


@pytest.fixture
def digits(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = toy_digits(3, gen)
    return x, torch.tensor([3, 0, 7])


# --------------------------------------------------------------------------- methods


def test_integrated_gradients_completeness(trained):
    model, x, y = trained
    attr, delta = methods.integrated_gradients(model, x, y, steps=64, baseline=0.0)
    assert attr.shape == x.shape
    with torch.no_grad():
        fx = model(x).gather(1, y[:, None])[:, 0]
        fb = model(torch.zeros_like(x)).gather(1, y[:, None])[:, 0]
    gap = fx - fb  # (B,) several logit units on the trained model
    assert (gap.abs() > 1).all()
    total = attr.flatten(1).sum(1)
    assert ((total - gap).abs() <= 0.01 * gap.abs()).all(), (total, gap)
    torch.testing.assert_close(delta, total - gap, rtol=0, atol=1e-4)


def test_saliency_of_linear_model_is_abs_weight(gen):
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(10, 784, generator=gen, dtype=torch.float64))
    x = torch.rand(4, 1, 28, 28, generator=gen)
    y = torch.tensor([0, 3, 3, 9])
    sal = methods.saliency(model, x, y)
    expected = model[1].weight.detach()[y].abs().reshape(4, 1, 28, 28)
    torch.testing.assert_close(sal, expected, rtol=0, atol=1e-12)


def test_grad_cam_shape_and_sign(tiny_model, digits):
    x, y = digits
    cam = methods.grad_cam(tiny_model, x, y, layer=tiny_model.conv2)
    assert cam.shape == x.shape and (cam >= 0).all()
    assert methods.default_cam_layer(tiny_model) is tiny_model.conv2


def _naive_occlusion(model, x, y, patch, stride, fill):
    """One forward per position, painting by slicing (like inspect.occlusion_maps_naive)."""
    starts = range(0, 28 - patch + 1, stride)
    prob, logit, pred = [], [], []
    with torch.no_grad():
        for k in range(len(x)):
            rows_p, rows_l, rows_c = [], [], []
            for r in starts:
                for c in starts:
                    z = x[k : k + 1].clone()
                    z[..., r : r + patch, c : c + patch] = fill
                    out = model(z)[0]
                    rows_l.append(out[y[k]])
                    rows_p.append(out.softmax(0)[y[k]])
                    rows_c.append(out.argmax())
            h = len(starts)
            prob.append(torch.stack(rows_p).reshape(h, h))
            logit.append(torch.stack(rows_l).reshape(h, h))
            pred.append(torch.stack(rows_c).reshape(h, h))
    return torch.stack(prob), torch.stack(logit), torch.stack(pred)


def test_occlusion_matches_naive_loop(tiny_model, digits):
    x, y = digits
    model = tiny_model.double()
    x = x.double()
    maps = occlusion_maps(model, x, y, patch=8, stride=4, fill=0.5, batch_size=7)
    prob, logit, pred = _naive_occlusion(model, x, y, 8, 4, 0.5)
    assert maps.maps.shape == (3, 6, 6)
    torch.testing.assert_close(maps.maps, prob, rtol=0, atol=1e-12)
    torch.testing.assert_close(maps.logits, logit, rtol=0, atol=1e-12)
    assert torch.equal(maps.preds, pred)
    assert torch.equal(maps.starts, torch.arange(0, 21, 4))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("patch", "stride"), [(3, 1), (4, 2)])
def test_occlusion_equals_captum(trained, dtype, patch, stride):
    """Captum's per-pixel output vs ours mapped by occlusion_to_pixels, to 1e-6.

    float64: logits and probabilities to 1e-6 absolute (the arithmetic is the same).
    float32: probabilities to 1e-6 absolute; logits (up to ~50 here, where one float32
    ulp is 4e-6) to 1e-6 relative to the largest logit, since a different batch size
    or memory format alone moves a float32 logit by an ulp (Captum vs itself too).
    """
    model, x, y = trained
    model = copy.deepcopy(model).to(dtype)  # trained: patches move the logits by units
    maps = occlusion_maps(model, x.to(dtype), y, patch=patch, stride=stride, fill=0.5)
    with torch.no_grad():
        scale = float(model(x.to(dtype)).abs().max())
    prob_drop = maps.base_prob[:, None, None] - maps.maps
    for output, drops in (("logit", maps.logit_drop), ("prob", prob_drop)):
        ours = methods.occlusion_to_pixels(drops, patch=patch, stride=stride)
        theirs = methods.occlusion_captum(
            model,
            x,
            y,
            patch=patch,
            stride=stride,
            fill=0.5,
            output=output,
            perturbations_per_eval=256,
        )
        assert ours.shape == theirs.shape == x.shape
        assert theirs.abs().max() > (1.0 if output == "logit" else 1e-3)  # not just zeros
        atol = 1e-6 * scale if (output == "logit" and dtype == torch.float32) else 1e-6
        torch.testing.assert_close(ours.float(), theirs, rtol=0, atol=atol)


def test_occlusion_to_pixels_single_window_spreads_evenly():
    drops = torch.zeros(1, 3, 3)
    drops[0, 1, 1] = 9.0  # patch 26 stride 1: positions 0..2; the middle window only
    px = methods.occlusion_to_pixels(drops, patch=26, stride=1)
    assert px.shape == (1, 1, 28, 28)
    # pixel (0, 0) is covered by one window (the corner one): drop 0
    assert px[0, 0, 0, 0] == 0
    # pixel (13, 13) is covered by all 9 windows: 9 / 9
    assert px[0, 0, 13, 13] == pytest.approx(1.0)


def test_registry_uniform_signature(tiny_model, digits):
    x, y = digits
    assert set(ATTRIBUTION_METHODS) == {"saliency", "integrated_gradients", "grad_cam", "occlusion"}
    for name, fn in ATTRIBUTION_METHODS.items():
        a = fn(tiny_model, x, y)
        assert a.shape == x.shape, name
        assert torch.isfinite(a).all(), name


# --------------------------------------------------------------------------- faithfulness


def test_deletion_of_perfect_attribution_beats_random(gen):
    # logits (w . x + b, 0), w > 0: pixel i adds exactly w_i * x_i to class 0 (vs fill 0);
    # scaled so that logit 0 is about +4 on x and -4 on the black image.
    x = torch.rand(4, 1, 28, 28, generator=gen, dtype=torch.float64)
    w = torch.rand(784, generator=gen, dtype=torch.float64)
    w *= 8.0 / (x.flatten(1) @ w).mean()
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = w
        model[1].bias.copy_(torch.tensor([-4.0, 0.0], dtype=torch.float64))
    y = torch.zeros(4, dtype=torch.long)
    perfect = w.reshape(1, 1, 28, 28) * x  # exact contribution of each pixel vs fill 0
    rand = faithfulness.random_order_attribution(x, generator=gen)
    good = faithfulness.deletion_insertion(model, x, y, perfect, n_steps=28, batch_size=50)
    base = faithfulness.deletion_insertion(model, x, y, rand, n_steps=28, batch_size=1024)
    assert good.deletion.shape == (4, 29) and good.fractions[-1] == 1
    # end points do not depend on the order
    torch.testing.assert_close(good.deletion[:, 0], base.deletion[:, 0])
    torch.testing.assert_close(good.deletion[:, -1], good.insertion[:, 0])
    torch.testing.assert_close(good.insertion[:, -1], good.deletion[:, 0])
    # perfect order: probability falls first on deletion, rises first on insertion
    assert (good.deletion_auc < base.deletion_auc).all()
    assert (good.insertion_auc > base.insertion_auc).all()
    assert good.mean_deletion_auc < base.mean_deletion_auc - 0.1
    # and the deletion curve is monotone non-increasing for the perfect order
    assert (good.deletion.diff(dim=1) <= 1e-12).all()


def test_deletion_batching_is_invisible(tiny_model, digits):
    x, y = digits
    attr = methods.saliency(tiny_model, x, y)
    a = faithfulness.deletion_insertion(tiny_model, x, y, attr, n_steps=10, batch_size=5)
    b = faithfulness.deletion_insertion(tiny_model, x, y, attr, n_steps=10, batch_size=4096)
    torch.testing.assert_close(a.deletion, b.deletion, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.insertion_auc, b.insertion_auc, rtol=0, atol=1e-6)


def test_random_order_uses_only_the_generator(digits):
    x, _ = digits
    a = faithfulness.random_order_attribution(x, generator=torch.Generator().manual_seed(3))
    b = faithfulness.random_order_attribution(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape


# --------------------------------------------------------------------------- sanity


def test_spearman_abs():
    a = torch.arange(10.0).reshape(1, 10)
    assert sanity.spearman_abs(a, a * 3).item() == pytest.approx(1.0)
    assert sanity.spearman_abs(a, -a).item() == pytest.approx(1.0)  # absolute values
    assert sanity.spearman_abs(a, 9 - a).item() == pytest.approx(-1.0)
    assert sanity.spearman_abs(a, torch.ones(1, 10)).item() == 0.0  # constant map


def test_randomizing_every_layer_decorrelates_gradient_methods(trained, gen):
    model, x, y = trained
    chosen = {k: ATTRIBUTION_METHODS[k] for k in ("saliency", "grad_cam")}
    before = copy.deepcopy(model.state_dict())
    table = sanity.cascading_randomization(model, x, y, chosen, generator=gen)
    assert list(table) == ["original", "fc2", "fc1", "conv2", "conv1"]
    assert table["original"] == pytest.approx({"saliency": 1.0, "grad_cam": 1.0})
    for name in chosen:
        assert abs(table["conv1"][name]) < 0.3, table
    assert sanity.sanity_verdict(table) == {"saliency": True, "grad_cam": True}
    for k, v in model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, before[k]), k


def test_randomize_layer_is_seeded_and_keeps_scale(tiny_model):
    a, b = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    sanity.randomize_layer_(a.fc1, generator=torch.Generator().manual_seed(5))
    sanity.randomize_layer_(b.fc1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    assert not torch.equal(a.fc1.weight, tiny_model.fc1.weight)
    ratio = float(a.fc1.weight.detach().std() / tiny_model.fc1.weight.detach().std())
    assert 0.8 < ratio < 1.2


# --------------------------------------------------------------------------- figures


def _render(fig) -> None:
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    plt.close(fig)


def test_figures_render(tiny_model, digits):
    x, y = digits
    x, y = x[:2], y[:2]
    attrs = {
        "saliency": methods.saliency(tiny_model, x, y),
        "integrated_gradients": methods.integrated_gradients(tiny_model, x, y, steps=8)[0],
        "grad_cam": methods.grad_cam(tiny_model, x, y, layer=tiny_model.conv2),
    }
    fig = figures.attribution_grid(x, y, attrs, preds=torch.tensor([3, 1]))
    assert len(fig.axes) == 2 * 4
    _render(fig)

    gen = torch.Generator().manual_seed(1)
    curves = {
        name: faithfulness.deletion_insertion(tiny_model, x, y, a, n_steps=4)
        for name, a in attrs.items()
    }
    curves["random"] = faithfulness.deletion_insertion(
        tiny_model, x, y, faithfulness.random_order_attribution(x, generator=gen), n_steps=4
    )
    fig = figures.deletion_curves(curves)
    assert len(fig.axes) == 2
    _render(fig)

    table = {
        "original": {"saliency": 1.0, "grad_cam": 1.0},
        "fc2": {"saliency": 0.7, "grad_cam": 0.4},
        "fc1": {"saliency": 0.2, "grad_cam": 0.1},
    }
    fig = figures.sanity_check(table)
    assert len(fig.axes) == 1
    _render(fig)

    maps = occlusion_maps(tiny_model, x, y, patch=6, stride=2, fill=0.5)
    fig = visualize_figures.occlusion(x, y, maps)
    assert len(fig.axes) == 3 * 2 + 2 * 2  # input, P(true), logit drop + 2 colorbars each
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith(f"{int(y[0])} \u2192 ") for t in texts), texts
    _render(fig)
    fig = visualize_figures.occlusion(x, y, maps, show_input=False)
    assert len(fig.axes) == 2 * 2 + 2 * 2
    _render(fig)
