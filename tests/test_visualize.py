"""Looking inside the models: filters, feature maps, occlusion maps and their figures, for
the study's CNN and for any other classifier (layers found by walking the model)."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from helpers.archs import MLP, Backwards, BlockCNN, FlatCNN, StudyCNN, seeded, study_features
from helpers.mnist_small import load_small
from helpers.params import params_with
from mnistlab import visualize
from mnistlab.core.tensors import set_seeds, to_pixels
from mnistlab.train import split_train_val, train_model
from mnistlab.visualize import figures as figs
from mnistlab.visualize.features import activations, conv_filters, pick_images
from mnistlab.visualize.occlusion import occlusion_maps, occlusion_maps_naive, patch_starts


class OnePixel(nn.Module):
    """Logits ``[w * (x[r, c] - 1/2), 0, ..., 0]``: only pixel ``(r, c)`` matters.

    With pixel value 1 it predicts class 0; painted to 0 it predicts class 1.
    """

    def __init__(self, r: int, c: int, w: float = 4.0) -> None:
        super().__init__()
        self.r, self.c = r, c
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10, dtype=x.dtype, device=x.device)
        logits[:, 0] = self.w * (x[:, 0, self.r, self.c] - 0.5)
        return logits


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Small CPU work on a shared 2-core machine runs many times faster on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The naive loop makes ~1000 single-image calls; threads only add sync overhead."""
    with single_thread():
        yield


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The study's cnn trained for two epochs on 1000 images (~88%), and 10 test images."""
    images, labels = load_small("train")
    test_x, test_y = load_small("test")
    tx, ty, vx, vy = split_train_val(images, labels, val_size=200, seed=0, train_limit=1000)
    cfg = params_with({"train": {"epochs": 2, "batch_size": 32}}).train
    set_seeds(0)
    model = StudyCNN()
    with single_thread():
        train_model(model, tx, ty, vx, vy, cfg=cfg, seed=0, progress=False)
    idx = pick_images(test_y, 10, seed=1)
    return model, to_pixels(test_x[idx]), test_y[idx]


def covered(starts: torch.Tensor, patch: int, pixel: int) -> torch.Tensor:
    """Which top-left offsets put ``pixel`` inside the patch, ``(len(starts),)`` bool."""
    return (starts <= pixel) & (pixel < starts + patch)


# --------------------------------------------------------------------------- occlusion


def _check_summaries(res, stride: int) -> None:
    """argmin, min_prob, pred_at_min and mean_drop all describe the map's minimum."""
    n = len(res.maps)
    rows, cols = res.argmin.unbind(1)
    assert torch.equal(res.maps[torch.arange(n), rows // stride, cols // stride], res.min_prob)
    assert torch.equal(res.min_prob, res.maps.flatten(1).min(1).values)
    assert torch.equal(res.preds[torch.arange(n), rows // stride, cols // stride], res.pred_at_min)
    assert torch.allclose(res.base_prob - res.maps.mean((1, 2)), res.mean_drop)


@pytest.mark.parametrize(("patch", "stride", "n"), [(5, 3, 3), (4, 2, 2), (6, 1, 1), (28, 1, 4)])
def test_batched_occlusion_equals_naive_loop(
    trained, one_thread, patch: int, stride: int, n: int
) -> None:
    """The trained cnn in float64, so the only difference left is the algorithm."""
    model, images, labels = trained
    double = StudyCNN().double()
    double.load_state_dict(model.state_dict())
    x, y = images[:n], labels[:n]
    fast = occlusion_maps(double, x, y, patch=patch, stride=stride, fill=0.5, batch_size=50)
    slow = occlusion_maps_naive(double, x, y, patch=patch, stride=stride, fill=0.5)
    side = (28 - patch) // stride + 1
    assert fast.maps.shape == slow.maps.shape == (n, side, side)
    assert fast.maps.dtype == slow.maps.dtype == torch.float64
    for a, b in (
        (fast.maps, slow.maps),
        (fast.base_prob, slow.base_prob),
        (fast.min_prob, slow.min_prob),
        (fast.mean_drop, slow.mean_drop),
    ):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)  # far inside the 1e-6 asked
    for a, b in (
        (fast.argmin, slow.argmin),
        (fast.pred_at_min, slow.pred_at_min),
        (fast.preds, slow.preds),
        (fast.base_pred, slow.base_pred),
    ):
        assert torch.equal(a, b)
    _check_summaries(fast, stride)
    assert (fast.base_prob > fast.min_prob).all()  # some patch position hurts the true class


@pytest.mark.parametrize(("patch", "stride", "n"), [(5, 3, 3), (6, 1, 2)])
def test_batched_occlusion_close_to_naive_loop_in_float32(
    trained, one_thread, patch: int, stride: int, n: int
) -> None:
    """In float32 a batch of 50 and a batch of 1 take different conv kernels: measured
    differences reach ~1e-6 (a dozen float32 ulps), so allow 5e-6."""
    model, images, labels = trained
    x, y = images[:n], labels[:n]
    fast = occlusion_maps(model, x, y, patch=patch, stride=stride, fill=0.5, batch_size=50)
    slow = occlusion_maps_naive(model, x, y, patch=patch, stride=stride, fill=0.5)
    assert fast.maps.dtype == torch.float32
    torch.testing.assert_close(fast.maps, slow.maps, atol=5e-6, rtol=0)
    torch.testing.assert_close(fast.base_prob, slow.base_prob, atol=5e-6, rtol=0)
    assert torch.equal(fast.base_pred, slow.base_pred)
    assert (fast.preds != slow.preds).float().mean() < 0.01  # only near-ties may flip
    _check_summaries(fast, stride)
    _check_summaries(slow, stride)


@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize(
    ("pixel", "patch", "stride"),
    [((10, 17), 5, 3), ((13, 14), 6, 1), ((0, 0), 1, 1), ((27, 27), 5, 3), ((20, 3), 28, 1)],
)
def test_one_pixel_model_drops_exactly_where_the_patch_covers(
    pixel: tuple[int, int], patch: int, stride: int, naive: bool
) -> None:
    r, c = pixel
    model = OnePixel(r, c)
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    images[:, 0, r, c] = 1.0
    labels = torch.zeros(3, dtype=torch.long)
    if naive:
        res = occlusion_maps_naive(model, images, labels, patch=patch, stride=stride, fill=0.0)
    else:
        res = occlusion_maps(
            model, images, labels, patch=patch, stride=stride, fill=0.0, batch_size=64
        )

    starts = patch_starts(patch, stride)
    expect = covered(starts, patch, r)[:, None] & covered(starts, patch, c)[None, :]
    high, low = math.exp(2) / (math.exp(2) + 9), math.exp(-2) / (math.exp(-2) + 9)  # x=1, 0
    assert torch.allclose(res.base_prob, torch.tensor(high, dtype=torch.float64))
    assert torch.equal(res.maps < res.base_prob[:, None, None] - 1e-9, expect.expand_as(res.maps))
    assert torch.allclose(res.maps[:, expect], torch.tensor(low, dtype=torch.float64))
    assert torch.allclose(res.maps[:, ~expect], torch.tensor(high, dtype=torch.float64))
    assert torch.equal(res.preds, torch.where(expect, 1, 0).expand_as(res.preds))
    assert (res.base_pred == 0).all()
    if expect.any():  # first covering position in row-major order, as pixel offsets
        i, j = (int(v) for v in expect.nonzero()[0])
        assert res.argmin.tolist() == [[int(starts[i]), int(starts[j])]] * 3
        assert (res.pred_at_min == 1).all()
        assert torch.allclose(res.min_prob, torch.tensor(low, dtype=torch.float64))
    else:  # stride 3 from 0 never reaches pixel 27 with a 5-pixel patch (last start 21)
        assert torch.equal(res.mean_drop, torch.zeros(3, dtype=torch.float64))
        assert (res.pred_at_min == 0).all()


@pytest.mark.parametrize(
    ("patch", "stride", "side"),
    [
        (6, 1, 23),
        (5, 3, 8),
        (1, 1, 28),
        (3, 5, 6),
        (7, 7, 4),
        (28, 1, 1),
        (28, 5, 1),
        (27, 2, 1),
        (2, 30, 1),
    ],
)
def test_map_shape(patch: int, stride: int, side: int) -> None:
    model = OnePixel(5, 5)
    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([0, 3])
    res = occlusion_maps(model, images, labels, patch=patch, stride=stride, fill=0.5, batch_size=64)
    assert res.maps.shape == res.preds.shape == (2, side, side)
    assert res.argmin.shape == (2, 2) and res.argmin.dtype == torch.long
    for t in (res.base_prob, res.min_prob, res.pred_at_min, res.mean_drop, res.base_pred):
        assert t.shape == (2,)
    assert res.starts.tolist() == list(range(0, 28 - patch + 1, stride))
    assert (res.argmin >= 0).all() and (res.argmin <= 28 - patch).all()


def test_chunking_does_not_change_the_result() -> None:
    """Chunks cut across images and positions; every cut must land in the right cell."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).double()
    images, labels = torch.rand(3, 1, 28, 28), torch.tensor([1, 7, 4])
    ref = occlusion_maps_naive(model, images, labels, patch=4, stride=3)
    for batch_size in (1, 7, 81, 243, 10_000):
        res = occlusion_maps(model, images, labels, patch=4, stride=3, batch_size=batch_size)
        torch.testing.assert_close(res.maps, ref.maps, atol=1e-12, rtol=0)
        assert torch.equal(res.preds, ref.preds) and torch.equal(res.argmin, ref.argmin)
    assert len({tuple(m.flatten().tolist()) for m in ref.maps}) == 3  # images differ


def test_bad_arguments_raise() -> None:
    model = OnePixel(0, 0)
    images, labels = torch.rand(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    for fn in (occlusion_maps, occlusion_maps_naive):
        with pytest.raises(ValueError, match="larger than"):
            fn(model, images, labels, patch=29, stride=1)
        with pytest.raises(ValueError, match="positive"):
            fn(model, images, labels, patch=0, stride=1)
        with pytest.raises(ValueError, match="positive"):
            fn(model, images, labels, patch=3, stride=0)
        with pytest.raises(ValueError, match="N, 1, 28, 28"):
            fn(model, images[:, 0], labels, patch=3, stride=1)
        with pytest.raises(ValueError, match="float"):
            fn(model, (images * 255).to(torch.uint8), labels, patch=3, stride=1)
        with pytest.raises(ValueError, match="labels"):
            fn(model, images, labels[:1], patch=3, stride=1)
    with pytest.raises(ValueError, match="batch_size"):
        occlusion_maps(model, images, labels, patch=3, stride=1, batch_size=0)


def test_result_rows(trained) -> None:
    model, images, labels = trained
    res = occlusion_maps(model, images[:3], labels[:3], patch=7, stride=7)
    rows = res.rows(torch.tensor([11, 22, 33]), labels[:3])
    assert [r["index"] for r in rows] == [11, 22, 33]
    assert [r["true"] for r in rows] == labels[:3].tolist()
    assert rows[1]["min_prob"] == pytest.approx(float(res.min_prob[1]))
    assert [rows[1]["min_row"], rows[1]["min_col"]] == res.argmin[1].tolist()


# --------------------------------------------------------------------------- filters, maps


@pytest.mark.parametrize("batch_norm", [False, True])
def test_conv_filters_and_activations(batch_norm: bool) -> None:
    model = seeded(StudyCNN, batch_norm)
    filters = conv_filters(model)
    assert list(filters) == ["conv1", "conv2"]
    assert filters["conv1"].shape == (32, 1, 3, 3) and filters["conv2"].shape == (32, 32, 3, 3)
    assert all(not w.requires_grad and w.device.type == "cpu" for w in filters.values())
    assert torch.equal(filters["conv2"], model.conv2.conv.weight.detach())
    filters["conv1"].zero_()  # a copy: the model is untouched
    assert model.conv1.conv.weight.abs().sum() > 0

    image = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    acts = activations(model, image)
    assert list(acts) == ["conv1", "conv2"]
    assert acts["conv1"].shape == (32, 28, 28) and acts["conv2"].shape == (32, 14, 14)
    assert all((a >= 0).all() and (a > 0).any() for a in acts.values())
    # conv1's maps are ReLU(conv(normalised pixels)), with BN when the model has it
    with torch.no_grad():
        conv = model.conv1.conv((image - model.mean) / model.std)
        expect = torch.relu(model.conv1.bn(conv) if batch_norm else conv)[0]
    torch.testing.assert_close(acts["conv1"], expect)
    # bit for bit what the study's model.features() gave before hooks replaced it
    with torch.inference_mode():
        before = study_features(model, image)
    for name in ("conv1", "conv2"):
        assert torch.equal(acts[name], before[name][0]), name
    with pytest.raises(ValueError, match="28x28"):
        activations(model, torch.rand(2, 1, 28, 28))


# model -> (conv, the module whose output is its map) paths, in forward order
WALKED = {
    "3-conv-bn": (
        lambda: seeded(BlockCNN, (4, 6, 8), batch_norm=True),
        [("features.0.0", "features.0.1"), ("features.1.0", "features.1.1")]
        + [("features.2.0", "features.2.1")],
    ),
    "2-conv": (
        lambda: seeded(BlockCNN, (5, 7)),
        [("features.0.0", "features.0.0"), ("features.1.0", "features.1.0")],
    ),
    "flat": (lambda: seeded(FlatCNN), [("layers.0", "layers.1"), ("layers.4", "layers.4")]),
    "backwards": (lambda: seeded(Backwards), [("stem.0", "stem.0")]),
    "mlp": (lambda: seeded(MLP), []),
}


@pytest.mark.parametrize("arch", list(WALKED))
def test_conv_layers_are_found_by_walking_the_model(arch: str) -> None:
    """Every Conv2d, named conv1, conv2, ... in forward order whatever the model calls
    it; its map is the ReLU of the conv's output, or of the BatchNorm right after it."""
    build, paths = WALKED[arch]
    model = build()
    names = [f"conv{i}" for i in range(1, len(paths) + 1)]
    filters = conv_filters(model)
    assert list(filters) == names
    for name, (conv, _) in zip(names, paths, strict=True):
        assert torch.equal(filters[name], model.get_submodule(conv).weight.detach())
    image = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    acts = activations(model, image)
    assert list(acts) == names
    seen = {}  # source path -> its output, captured here by hand
    hooks = [
        model.get_submodule(src).register_forward_hook(
            lambda m, i, o, src=src: seen.setdefault(src, o.detach())
        )
        for _, src in paths
    ]
    with torch.no_grad():
        model(image)
    for h in hooks:
        h.remove()
    for name, (conv, src) in zip(names, paths, strict=True):
        assert torch.equal(acts[name], torch.relu(seen[src])[0]), name
        assert acts[name].shape[0] == model.get_submodule(conv).out_channels


def test_pick_images_is_seeded_and_distinct() -> None:
    labels = torch.arange(100) % 10
    a, b = pick_images(labels, 10, seed=5), pick_images(labels, 10, seed=5)
    assert torch.equal(a, b) and a.dtype == torch.long
    assert len(set(a.tolist())) == 10 and a.min() >= 0 and a.max() < 100
    assert not torch.equal(a, pick_images(labels, 10, seed=6))
    with pytest.raises(ValueError):
        pick_images(labels, 101, seed=0)


# --------------------------------------------------------------------------- figures


def _close(fig: Figure) -> None:
    plt.close(fig)


def test_filter_figures_share_one_zero_centred_scale(trained) -> None:
    filters = conv_filters(trained[0])
    for fn, layer, n_axes in (
        (figs.filters, "conv1", 33),
        (figs.filters_channel0, "conv2", 33),
        (figs.filters_all, "conv2", 2),
    ):
        fig = fn(filters[layer], layer=layer, model="cnn")
        try:
            assert isinstance(fig, Figure)
            assert len(fig.axes) == n_axes, fn.__name__
            clims = {im.get_clim() for ax in fig.axes for im in ax.images}
            assert len(clims) == 1, fn.__name__  # one shared scale for every kernel
            lo, hi = clims.pop()
            assert hi > 0 and lo == -hi
            assert fig.axes[-1].get_ylabel() == "weight"  # the colour bar
        finally:
            _close(fig)
    fig = figs.filters_all(filters["conv2"], layer="conv2")
    try:  # the mosaic holds all 32 x 32 kernels of 3x3 with 1-pixel separators
        assert fig.axes[0].images[0].get_array().shape == (32 * 4 - 1, 32 * 4 - 1)
        assert fig.axes[0].get_title() == "all conv2 filters (32x32 kernels of 3x3)"
    finally:
        _close(fig)


def test_filter_figures_per_conv_layer() -> None:
    """A layer on the 1-channel input gets one grid; deeper layers channel 0 and the
    mosaic. Channel counts that leave empty grid cells (5, 7, 9) still get a colour bar."""
    weights = conv_filters(seeded(BlockCNN, (5, 7, 9)))
    out = figs.filter_figures(weights, model="m")
    try:
        assert list(out) == [
            "conv1_filters",
            "conv2_filters_channel0",
            "conv2_filters_all",
            "conv3_filters_channel0",
            "conv3_filters_all",
        ]
        assert len(out["conv1_filters"].axes) == 5 + 1  # kernels and the colour bar
        assert len(out["conv3_filters_channel0"].axes) == 9 + 1
        mosaic = out["conv3_filters_all"].axes[0].images[0].get_array()
        assert mosaic.shape == (9 * 4 - 1, 7 * 4 - 1)  # 9 output rows of 7 input kernels
        assert out["conv1_filters"].get_suptitle() == (
            "m: conv1 filters (3x3, one per output channel)"
        )
        for fig in out.values():
            fig.savefig(io.BytesIO(), format="png", dpi=30)
    finally:
        for fig in out.values():
            _close(fig)
    assert figs.filter_figures({}) == {}  # no conv layer, no figure


@pytest.mark.parametrize("channels", [(8, 20), (5, 7), (3, 4, 6)])
def test_activations_figure_with_empty_grid_cells(channels: tuple[int, ...]) -> None:
    """Layers of different widths share the rows: the narrower ones leave empty cells,
    which are removed (their colour bar must not be asked to sit beside them)."""
    model = seeded(BlockCNN, channels)
    acts = activations(model, torch.rand(1, 1, 28, 28))
    fig = figs.activations(torch.rand(1, 1, 28, 28), acts, model="m")
    try:
        assert len(fig.axes) == 1 + sum(channels) + len(channels)  # input, maps, colour bars
        fig.savefig(io.BytesIO(), format="png", dpi=30)
    finally:
        _close(fig)
    with pytest.raises(ValueError, match="no feature maps"):
        figs.activations(torch.rand(1, 1, 28, 28), {})


def test_activations_figure(trained) -> None:
    model, images, labels = trained
    acts = activations(model, images[:1])
    fig = figs.activations(images[0], acts, model="cnn", caption=f"true {int(labels[0])}")
    try:
        assert isinstance(fig, Figure)
        assert len(fig.axes) == 1 + 32 + 32 + 2  # input, both layers, a colour bar each
    finally:
        _close(fig)


@pytest.mark.parametrize("n", [10, 3])
def test_occlusion_figure(trained, n: int) -> None:
    model, images, labels = trained
    res = occlusion_maps(model, images[:n], labels[:n], patch=6, stride=2)
    fig = figs.occlusion(images[:n], labels[:n], res, model="cnn")
    try:
        assert isinstance(fig, Figure)
        assert len(fig.axes) == 3 * n + 2 * n  # image, P map, logit-drop map; 2 colour bars
        maps = [ax for ax in fig.axes if ax.images and ax.get_title().startswith("P(true")]
        assert len(maps) == n
        # Each map on its own range (readable where the model is sure everywhere).
        for ax, m in zip(maps, res.maps, strict=True):
            assert ax.images[0].get_clim() == pytest.approx((float(m.min()), float(m.max())))
        assert all(ax.images[0].get_array().shape == (12, 12) for ax in maps)
        # The largest logit drop is marked with the class that takes over there.
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        drops = res.logit_drop.flatten(1).argmax(1)
        for k in range(n):
            taker = int(res.preds[k].flatten()[drops[k]])
            assert f"{int(labels[k])} \u2192 {taker}" in texts
    finally:
        _close(fig)


# --------------------------------------------------------------------------- the stage

VIS_FIGURES_2CONV = [
    "conv1_filters",
    "conv2_filters_channel0",
    "conv2_filters_all",
    "activations",
    "occlusion",
]
STAGE_MODELS = {  # name -> (model, figure names, not_applicable, render the figures)
    "mlp": (lambda: seeded(MLP), ["occlusion"], True, True),
    # 64 and 128 channels: the first layer's maps leave half the shared rows empty
    "cnn_64_128": (lambda: seeded(BlockCNN, (64, 128)), VIS_FIGURES_2CONV, False, False),
    "cnn_3conv_bn": (
        lambda: seeded(BlockCNN, (4, 6, 8), batch_norm=True),
        VIS_FIGURES_2CONV[:3]
        + ["conv3_filters_channel0", "conv3_filters_all"]
        + VIS_FIGURES_2CONV[3:],
        False,
        True,
    ),
    "cnn_flat_5_7": (lambda: seeded(FlatCNN), VIS_FIGURES_2CONV, False, True),
}


@pytest.mark.parametrize("arch", list(STAGE_MODELS))
def test_compute_on_any_architecture(arch: str) -> None:
    """The stage's library end to end: filters and feature maps for every conv layer,
    none (and said so) without one; occlusion for every model."""
    build, names, skipped, render = STAGE_MODELS[arch]
    model = build()
    images = torch.randint(0, 256, (20, 28, 28), generator=torch.Generator().manual_seed(0))
    labels = torch.arange(20) % 10
    cfg = params_with(
        {"visualize": {"occlusion": {"n_images": 2, "patch": 14, "stride": 7, "batch_size": 9}}}
    ).visualize
    with single_thread():
        out = visualize.compute(model, images.to(torch.uint8), labels, name=arch, cfg=cfg, seed=0)
    try:
        assert list(out.figures) == names
        if render:
            for fig in out.figures.values():
                fig.savefig(io.BytesIO(), format="png", dpi=30)
    finally:
        for fig in out.figures.values():
            _close(fig)
    m = out.metrics
    if skipped:
        reason = "no Conv2d layer"
        assert m["not_applicable"] == {"filters": reason, "activations": reason}
        assert "conv1" not in out.arrays
    else:
        assert "not_applicable" not in m
        first = next(x for x in model.modules() if isinstance(x, nn.Conv2d))
        assert np.array_equal(out.arrays["conv1"], first.weight.detach().numpy())
    assert len(m["occlusion"]["images"]) == 2 and out.arrays["maps"].shape == (2, 3, 3)
