"""Tests of the attribution library on tiny models (each well under 10 s on one thread)."""

from __future__ import annotations

import copy
import io
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from helpers.archs import MLP, Backwards, BlockCNN, FlatCNN, StudyCNN, seeded
from helpers.mnist_small import load_small
from helpers.params import params_with
from mnistlab.attribution import (
    baselines,
    compute,
    faithfulness,
    figures,
    methods,
    ranking,
    registry,
    sanity,
    trusted_method,
)
from mnistlab.core.errors import ParamsError
from mnistlab.visualize import figures as visualize_figures
from mnistlab.visualize.occlusion import occlusion_maps


def TinyCNN() -> StudyCNN:  # noqa: N802 - reads like the class it builds
    """A miniature of the study's CNN: same layer names, 4 channels, 16 hidden units."""
    return StudyCNN(channels=4, hidden=16)


CFG = params_with({"attribution": {"ig_steps": 32}}).attribution
GREY_MEAN = torch.full((1, 1, 28, 28), 0.13)  # about MNIST's mean pixel, for the ig_mean baseline
ATTRIBUTION_METHODS = registry(CFG, mean_image=GREY_MEAN, seed=0)
METHOD_NAMES = {
    "saliency",
    "smoothgrad",
    "integrated_gradients",
    "ig_blur",
    "ig_noise",
    "ig_mean",
    "grad_cam",
    "occlusion",
}


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


def test_registry_uniform_signature_and_deterministic(tiny_model, digits):
    """Every method maps (model, x, y) to a finite map like x, the same bytes on every call:
    the sanity check recomputes each map on randomised models, and noise drawn afresh
    there would read as the model's doing."""
    x, y = digits
    assert set(ATTRIBUTION_METHODS) == METHOD_NAMES
    state = torch.get_rng_state()
    for name, fn in ATTRIBUTION_METHODS.items():
        a = fn(tiny_model, x, y)
        assert a.shape == x.shape, name
        assert torch.isfinite(a).all(), name
        assert torch.equal(a, fn(tiny_model, x, y)), name
    assert torch.equal(torch.get_rng_state(), state)  # the global generator left as it was


def test_smoothgrad_is_seeded_noise_tunnel(trained):
    model, x, y = trained
    a = methods.smoothgrad(model, x, y, samples=8, noise=0.15, seed=3)
    torch.manual_seed(123)  # the global state at the call must not matter
    b = methods.smoothgrad(model, x, y, samples=8, noise=0.15, seed=3)
    c = methods.smoothgrad(model, x, y, samples=8, noise=0.15, seed=4)
    assert a.shape == x.shape and (a >= 0).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # the seed is what draws the noise
    assert not torch.allclose(a, methods.saliency(model, x, y))  # noise was added
    # no noise at all: each copy is x, so SmoothGrad is the saliency
    still = methods.smoothgrad(model, x, y, samples=2, noise=1e-12, seed=3)
    torch.testing.assert_close(still, methods.saliency(model, x, y), rtol=1e-4, atol=1e-6)


def _class_logit(model, x, y):
    with torch.no_grad():
        return model(x).gather(1, y[:, None])[:, 0]


@pytest.mark.parametrize("baseline", ["blur", "mean"])
def test_integrated_gradients_completeness_from_informative_baselines(trained, baseline):
    model, x, y = trained
    ref = baselines.gaussian_blur(x, 5.0) if baseline == "blur" else GREY_MEAN.expand_as(x)
    attr, delta = methods.integrated_gradients(model, x, y, steps=64, baseline=ref)
    gap = _class_logit(model, x, y) - _class_logit(model, ref, y)  # (B,)
    assert (gap.abs() > 1).all()  # the baseline is far from the image for the model
    total = attr.flatten(1).sum(1)
    assert ((total - gap).abs() <= 0.02 * gap.abs()).all(), (total, gap)
    assert (delta.abs() <= 0.02 * gap.abs()).all()


def test_integrated_gradients_noise_averages_seeded_baselines(trained):
    model, x, y = trained
    samples = 3
    attr = methods.integrated_gradients_noise(model, x, y, steps=64, samples=samples, seed=7)
    noise = baselines.uniform_noise((samples * len(x), *x.shape[1:]), seed=7)  # sample-major
    gap = torch.stack(
        [
            _class_logit(model, x, y) - _class_logit(model, noise[k * len(x) : (k + 1) * len(x)], y)
            for k in range(samples)
        ]
    ).mean(0)  # (B,) completeness holds for the mean over the baselines
    total = attr.flatten(1).sum(1)
    torch.testing.assert_close(total, gap, rtol=0.02, atol=0.05)
    one = methods.integrated_gradients(model, x, y, steps=64, baseline=noise[: len(x)])[0]
    assert not torch.allclose(attr, one, atol=1e-3)  # more than the first draw
    again = methods.integrated_gradients_noise(model, x, y, steps=64, samples=samples, seed=7)
    assert torch.equal(attr, again)


# --------------------------------------------------------------------------- baselines


def test_gaussian_blur_keeps_constants_and_erases_a_stroke():
    grey = torch.full((2, 1, 28, 28), 0.3)
    torch.testing.assert_close(baselines.gaussian_blur(grey, 5.0), grey, rtol=0, atol=1e-7)
    sigma, width = 5.0, 3
    stroke = torch.zeros(1, 1, 28, 28)
    stroke[..., 13 : 13 + width] = 1.0  # a vertical stroke through the whole image
    blurred = baselines.gaussian_blur(stroke, sigma)
    assert blurred.shape == stroke.shape and blurred.dtype == stroke.dtype
    # its centre keeps erf(w / (2 sqrt(2) sigma)) of its brightness (params.yaml's 24%),
    # up to the kernel's 3-sigma cut and the border
    peak = float(blurred[0, 0, 14, 14])
    assert peak == pytest.approx(math.erf(width / (2 * math.sqrt(2) * sigma)), abs=0.01)
    assert 0 <= float(blurred.min()) and float(blurred.max()) <= 1  # a mean of pixels
    assert baselines.gaussian_kernel(0.5, 28).numel() == 2 * 2 + 1  # 3 sigma, rounded up
    assert baselines.gaussian_kernel(100.0, 28).numel() == 2 * 27 + 1  # no wider than needed


def test_mean_image_of_the_training_images():
    images, _ = load_small("train")
    mean = baselines.mean_image(images)
    assert mean.shape == (1, 1, 28, 28) and mean.dtype == torch.float32
    expected = images.double().mean(0) / 255
    torch.testing.assert_close(mean[0, 0].double(), expected, rtol=0, atol=1e-7)
    shuffled = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(1))]
    assert torch.equal(baselines.mean_image(shuffled), mean)  # exact: order-free
    assert 0.08 < float(mean.mean()) < 0.2  # MNIST's mean pixel is about 0.13
    with pytest.raises(ValueError, match="uint8"):
        baselines.mean_image(images.float())


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


def test_blur_fill_leaves_a_blank_image_unchanged(trained, gen):
    """A constant image is its own blur: deleting any pixels changes nothing, so the
    curves are flat whatever the order. Deleting to black changes the image."""
    model, _, _ = trained
    grey = torch.full((2, 1, 28, 28), 0.4)
    y = torch.tensor([1, 5])
    order = faithfulness.random_order_attribution(grey, generator=gen)
    fill = baselines.fill_image(grey, "blur", sigma=5.0)
    blur = faithfulness.deletion_insertion(model, grey, y, order, n_steps=8, fill=fill)
    for curve in (blur.deletion, blur.insertion):
        torch.testing.assert_close(curve, curve[:, :1].expand_as(curve), rtol=0, atol=1e-6)
    black = faithfulness.deletion_insertion(model, grey, y, order, n_steps=8, fill=0.0)
    assert (black.deletion[:, 0] - black.deletion[:, -1]).abs().max() > 1e-3


def test_blur_fill_does_not_reward_following_the_input():
    """An ink counter (logit = k * sum of pixels) on a thick bright block and thin dimmer
    lines. Deleting to black, the order of the input itself (brightest first) is the best
    possible one; deleting to the blur, a block's inside is nearly its own blur, so the
    thin lines carry what deletion can remove, and the input's order is beaten by the
    model's exact per-pixel drops, ``k * (x - blur(x))``."""
    sigma = 2.0
    x = torch.zeros(1, 1, 28, 28, dtype=torch.float64)
    x[..., 4:16, 4:16] = 1.0  # 144 pixels, bright
    x[..., 3:25, 18:27:4] = 0.6  # three 1-pixel lines, 66 pixels, dimmer
    k = 8.0 / float(x.sum())  # logit +4 on x, -4 on the black image
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 2)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = k
        model[1].bias.copy_(torch.tensor([-4.0, 0.0], dtype=torch.float64))
    y = torch.zeros(1, dtype=torch.long)
    blurred = baselines.fill_image(x, "blur", sigma=sigma)
    follows_input = x
    exact_drop = k * (x - blurred)  # the logit each pixel loses when it takes the blur

    def auc(attr, fill):
        c = faithfulness.deletion_insertion(model, x, y, attr, n_steps=28, fill=fill)
        return c.mean_deletion_auc

    # black: following the input is optimal (each pixel's drop is k * x)
    assert auc(follows_input, 0.0) < auc(exact_drop, 0.0)
    # blur: it is not
    assert auc(exact_drop, blurred) < auc(follows_input, blurred) - 0.05


def test_deletion_fill_image_must_match(tiny_model, digits):
    x, y = digits
    with pytest.raises(ValueError, match="fill must be shaped like x"):
        faithfulness.deletion_insertion(tiny_model, x, y, x, fill=torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="'black' or 'blur'"):
        baselines.fill_image(x, "grey", sigma=1.0)


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


# model -> its sanity steps top down: name -> the parameters each redraws
STEPS = {
    "study": (
        lambda: seeded(StudyCNN, channels=4, hidden=16),
        {
            "fc2": ("fc2.weight", "fc2.bias"),
            "fc1": ("fc1.weight", "fc1.bias"),
            "conv2": ("conv2.conv.weight", "conv2.conv.bias"),
            "conv1": ("conv1.conv.weight", "conv1.conv.bias"),
        },
    ),
    "study_bn": (  # the conv and its BatchNorm are one step, the block
        lambda: seeded(StudyCNN, True, channels=4, hidden=16),
        {
            "fc2": ("fc2.weight", "fc2.bias"),
            "fc1": ("fc1.weight", "fc1.bias"),
            "conv2": ("conv2.conv.weight", "conv2.conv.bias", "conv2.bn.weight", "conv2.bn.bias"),
            "conv1": ("conv1.conv.weight", "conv1.conv.bias", "conv1.bn.weight", "conv1.bn.bias"),
        },
    ),
    "mlp": (
        lambda: seeded(MLP),
        {f"net.{k}": (f"net.{k}.weight", f"net.{k}.bias") for k in (5, 3, 1)},
    ),
    "cnn_3conv_bn": (
        lambda: seeded(BlockCNN, (4, 6, 8), batch_norm=True),
        {
            "out": ("out.weight", "out.bias"),
            "fc": ("fc.weight", "fc.bias"),
            **{
                f"features.{k}": tuple(
                    f"features.{k}.{m}.{p}" for m in (0, 1) for p in ("weight", "bias")
                )
                for k in (2, 1, 0)
            },
        },
    ),
    "flat": (  # no block of its own: a step is its layers, the conv with its BatchNorm
        lambda: seeded(FlatCNN),
        {
            "layers.10": ("layers.10.weight", "layers.10.bias"),
            "layers.8": ("layers.8.weight", "layers.8.bias"),
            "layers.4": ("layers.4.weight", "layers.4.bias"),
            "layers.0": ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"),
        },
    ),
    "backwards": (  # registered head first; forward order decides
        lambda: seeded(Backwards),
        {"head": ("head.weight", "head.bias"), "stem": ("stem.0.weight", "stem.0.bias")},
    ),
}


@pytest.mark.parametrize("arch", list(STEPS))
def test_randomization_steps_are_the_models_layers_top_down(arch):
    build, expected = STEPS[arch]
    model = build()
    steps = sanity.randomization_steps(model)
    assert list(steps) == list(expected)  # top (output) first
    assert steps == expected
    # every parameter is redrawn by exactly one step
    assert sorted(p for names in steps.values() for p in names) == sorted(
        n for n, _ in model.named_parameters()
    )


@pytest.mark.parametrize("batch_norm", [False, True])
def test_found_steps_redraw_what_the_named_blocks_did(batch_norm, digits):
    """For the study's CNN, the steps found by walking it are the old fixed list
    (fc2, fc1, conv2, conv1, each submodule whole): the same table, bit for bit."""
    x, y = digits
    model = seeded(StudyCNN, batch_norm, channels=4, hidden=16)
    chosen = {k: ATTRIBUTION_METHODS[k] for k in ("saliency", "grad_cam")}
    found = sanity.cascading_randomization(
        model, x, y, chosen, generator=torch.Generator().manual_seed(0)
    )
    named = sanity.cascading_randomization(
        model,
        x,
        y,
        chosen,
        generator=torch.Generator().manual_seed(0),
        layers=("fc2", "fc1", "conv2", "conv1"),
    )
    assert list(found) == ["original", "fc2", "fc1", "conv2", "conv1"]
    assert found == named


@pytest.mark.parametrize(
    ("arch", "layer"),
    [
        ("study", "conv2"),  # the block conv-pool-relu: (B, 4, 7, 7)
        ("study_bn", "conv2"),
        ("cnn_3conv_bn", "features.2"),  # the last block
        ("flat", "layers.4"),  # no block holds the conv alone: the conv itself
        ("backwards", "stem"),
    ],
)
def test_grad_cam_layer_is_the_last_conv(arch, layer, digits):
    model = STEPS[arch][0]()
    assert methods.default_cam_layer(model) is model.get_submodule(layer)
    assert methods.not_applicable(model) == {}
    x, y = digits
    cam = methods.grad_cam(model, x, y, layer=model.get_submodule(layer))
    assert cam.shape == x.shape and (cam >= 0).all()


def test_grad_cam_without_a_conv_is_not_applicable(digits):
    model = seeded(MLP)
    assert methods.not_applicable(model) == {"grad_cam": "no Conv2d layer"}
    with pytest.raises(methods.NotApplicableError, match="no Conv2d layer"):
        methods.default_cam_layer(model)
    x, y = digits  # the other methods run
    for name in METHOD_NAMES - {"grad_cam"}:
        assert ATTRIBUTION_METHODS[name](model, x, y).shape == x.shape, name


# --------------------------------------------------------------------------- trusted method


def test_trusted_method_passes_sanity_with_lowest_blur_auc():
    auc = {"integrated_gradients": 0.05, "saliency": 0.30, "grad_cam": 0.20, "random": 0.01}
    passes = {"integrated_gradients": False, "saliency": True, "grad_cam": True}
    # the random order is no method, even with the lowest AUC; IG fails the check
    assert ranking(auc) == ["integrated_gradients", "grad_cam", "saliency"]
    assert trusted_method(auc, passes) == "grad_cam"
    assert trusted_method(auc, {**passes, "grad_cam": False}) == "saliency"
    assert trusted_method(auc, dict.fromkeys(passes, False)) is None
    assert trusted_method(auc, {}) is None  # a method without a verdict is not trusted


@pytest.mark.parametrize(
    ("fills", "needle"),
    [
        (["black", "grey"], "attribution.deletion_fills.1: Input should be 'black' or 'blur'"),
        (["blur", "blur"], "attribution.deletion_fills: each fill once"),
        (["black"], "attribution.deletion_fills: must include 'blur'"),
        ([], "attribution.deletion_fills: List should have at least 1 item"),
        ("blur", "attribution.deletion_fills: Input should be a valid list"),
    ],
)
def test_bad_deletion_fills_is_one_line_naming_the_key(fills, needle):
    with pytest.raises(ParamsError) as info:
        params_with({"attribution": {"deletion_fills": fills}})
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"blur_sigma": 0.0}, "attribution.blur_sigma: Input should be greater than 0"),
        ({"smoothgrad": {"samples": 0}}, "attribution.smoothgrad.samples:"),
        ({"smoothgrad": {"noyse": 0.1}}, "attribution.smoothgrad.noyse: unknown key"),
        (
            {"ig_noise_samples": "4"},
            "attribution.ig_noise_samples: Input should be a valid integer",
        ),
        ({"deletion_fill": 0.0}, "attribution.deletion_fill: unknown key"),  # the old key
    ],
)
def test_bad_attribution_params_name_the_key(override, needle):
    with pytest.raises(ParamsError) as info:
        params_with({"attribution": override})
    assert needle in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- the stage


def _small_cfg():
    return params_with(
        {
            "attribution": {
                "n_images": 2,
                "ig_steps": 4,
                "ig_noise_samples": 2,
                "smoothgrad": {"samples": 2},
                "occlusion": {"patch": 7, "stride": 7},
                "deletion_steps": 4,
            }
        }
    ).attribution


def test_compute_metrics_layout_and_identical_reruns(tiny_model):
    images = torch.randint(0, 256, (20, 28, 28), generator=torch.Generator().manual_seed(0))
    images = images.to(torch.uint8)
    labels = torch.arange(20) % 10
    cfg = _small_cfg()

    def run():
        out = compute(
            tiny_model, images, labels, name="tiny", cfg=cfg, seed=0, mean_image=GREY_MEAN
        )
        for fig in out.figures.values():
            plt.close(fig)
        return out

    a, b = run(), run()
    m = a.metrics
    assert m["fills"] == ["black", "blur"]
    for fill in ("black", "blur"):
        assert (
            set(m["deletion_auc"][fill])
            == set(m["insertion_auc"][fill])
            == METHOD_NAMES | {"random"}
        )
        assert sorted(m["ranking"][fill]) == sorted(METHOD_NAMES)
        assert m["best_method"][fill] == m["ranking"][fill][0]
    assert set(m["sanity_passes"]) == METHOD_NAMES
    assert m["trusted_fill"] == "blur"
    assert m["trusted_method"] == trusted_method(m["deletion_auc"]["blur"], m["sanity_passes"])
    if m["trusted_method"] is not None:
        assert m["trusted_deletion_auc"] == m["deletion_auc"]["blur"][m["trusted_method"]]
    assert set(a.figures) == {"attribution_grid", "deletion_curves", "sanity_check"}
    assert {f"deletion_blur_{me}" for me in METHOD_NAMES} < set(a.rows[0])
    assert {f"insertion_black_{me}" for me in METHOD_NAMES} < set(a.rows[0])
    # same params and seed: the same numbers and arrays
    assert a.metrics == b.metrics and a.rows == b.rows and a.tables == b.tables
    assert a.arrays.keys() == b.arrays.keys()
    for key in a.arrays:
        assert np.array_equal(a.arrays[key], b.arrays[key]), key


STAGE_MODELS = {  # name -> (model, sanity steps top down)
    "mlp": (lambda: seeded(MLP), ["net.5", "net.3", "net.1"]),
    "cnn_64_128": (lambda: seeded(BlockCNN, (64, 128)), ["out", "fc", "features.1", "features.0"]),
    "cnn_3conv_bn": (
        lambda: seeded(BlockCNN, (4, 6, 8), batch_norm=True),
        ["out", "fc", "features.2", "features.1", "features.0"],
    ),
    "cnn_flat_5_7": (lambda: seeded(FlatCNN), ["layers.10", "layers.8", "layers.4", "layers.0"]),
}


@pytest.mark.parametrize("arch", list(STAGE_MODELS))
def test_compute_on_any_architecture(arch):
    """The stage's library end to end: a method that cannot run (Grad-CAM without a conv)
    is in no table, curve, array or figure, and the metrics say why; the rest all run."""
    build, steps = STAGE_MODELS[arch]
    model = build()
    images = torch.randint(0, 256, (20, 28, 28), generator=torch.Generator().manual_seed(0))
    out = compute(
        model,
        images.to(torch.uint8),
        torch.arange(20) % 10,
        name=arch,
        cfg=_small_cfg(),
        seed=0,
        mean_image=GREY_MEAN,
    )
    for fig in out.figures.values():
        plt.close(fig)
    m = out.metrics
    conv = arch != "mlp"
    expected = METHOD_NAMES if conv else METHOD_NAMES - {"grad_cam"}
    if conv:
        assert "not_applicable" not in m
    else:
        assert m["not_applicable"] == {"grad_cam": "no Conv2d layer"}
    for fill in ("black", "blur"):
        assert (
            set(m["deletion_auc"][fill]) == set(m["insertion_auc"][fill]) == expected | {"random"}
        )
        assert set(m["ranking"][fill]) == expected
    assert set(m["sanity_passes"]) == expected
    assert list(m["sanity_spearman"]) == ["original", *steps]
    assert all(set(row) == expected for row in m["sanity_spearman"].values())
    assert [r["randomized"] for r in out.tables["sanity"]] == ["original", *steps]
    assert all(set(r) == {"step", "randomized"} | expected for r in out.tables["sanity"])
    assert ("deletion_blur_grad_cam" in out.rows[0]) == conv
    assert ("grad_cam" in out.arrays) == conv
    assert set(out.figures) == {"attribution_grid", "deletion_curves", "sanity_check"}
    assert len(out.figures["attribution_grid"].axes) == 2 * (1 + len(expected))


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
    passes = {"saliency": True, "integrated_gradients": False, "grad_cam": True}
    fig = figures.attribution_grid(
        x, y, attrs, preds=torch.tensor([3, 1]), passes=passes, trusted="grad_cam"
    )
    assert len(fig.axes) == 2 * 4
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles[2] == "IG black\nsanity fails" and titles[3].endswith("(trusted)")
    _render(fig)

    gen = torch.Generator().manual_seed(1)
    order = faithfulness.random_order_attribution(x, generator=gen)
    curves = {
        fill: {
            name: faithfulness.deletion_insertion(tiny_model, x, y, a, n_steps=4, fill=ref)
            for name, a in {**attrs, "random": order}.items()
        }
        for fill, ref in (("black", 0.0), ("blur", baselines.gaussian_blur(x, 5.0)))
    }
    fig = figures.deletion_curves(curves, passes=passes)
    assert len(fig.axes) == 2 * 2
    legend = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    aucs = [float(t.split("(")[1].split(",")[0].rstrip(")")) for t in legend]
    assert aucs == sorted(aucs) and len(legend) == 4  # the ranking, best first
    assert any("fails sanity" in t for t in legend)
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
