"""Attribution methods for an MNIST classifier: saliency, SmoothGrad, Integrated Gradients
(from any baseline, or averaged over noise baselines), Grad-CAM and occlusion (ours,
batched, and Captum's for reference).

Every method takes raw pixels ``x`` in [0, 1] shaped ``(B, 1, 28, 28)``, the classes
``y`` ``(B,)`` to explain (usually the true labels), and attributes the model's
*logit* of class ``y`` (occlusion also reports the softmax probability). The model
maps ``(B, 1, 28, 28)`` pixels to ``(B, K)`` logits; it is put in eval mode. Results
are detached CPU tensors in the model's floating dtype.

Sign conventions (larger = more important for class ``y`` everywhere):

* saliency: ``|d logit_y / d x|`` (Captum ``abs=True``, Simonyan et al. 2014), >= 0.
* SmoothGrad: the saliency averaged over noisy copies of ``x`` (Smilkov et al. 2017), >= 0.
* integrated gradients: signed (positive pixels push ``logit_y`` up), from any baseline.
* grad-CAM: ReLU'd, >= 0 (Selvaraju et al. 2017), bilinearly upsampled to 28x28.
* occlusion: signed drop ``logit_y(x) - logit_y(x occluded)`` (positive = the patch
  hurt class ``y``).

Occlusion and Captum. Our occlusion returns one value per patch *position*
(:func:`mnistlab.visualize.occlusion.occlusion_maps`, the study's own). Captum's
``Occlusion`` returns one value per *pixel*: each window's drop ``f(x) - f(x occluded)``
is added to every pixel the window covers, and each pixel's sum is divided by the number
of windows covering it.
:func:`occlusion_to_pixels` applies exactly that map to our per-position drops, so
``occlusion_to_pixels(occlusion_maps(...).logit_drop, ...)`` must equal
``occlusion_captum(..., output="logit")`` (and ``prob_drop`` the ``"prob"`` output).
Comparing there tests the same forward passes, the same target and the same
aggregation, to 1e-6. The two agree only when Captum's windows are ours, i.e. when
``(28 - patch) % stride == 0`` and ``stride <= patch``: otherwise Captum adds a final
window clipped at the border, which we do not evaluate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from captum.attr import (
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn
from torch.nn import functional as F

from mnistlab.attribution.baselines import uniform_noise
from mnistlab.core.layers import NO_CONV, cam_layer
from mnistlab.core.params_types import IMAGE_SIZE
from mnistlab.core.tensors import check_inputs
from mnistlab.visualize.features import placement, softmax
from mnistlab.visualize.occlusion import occlusion_maps, patch_starts

AttributionFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- helpers


def _prepare(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes, put ``model`` in eval mode, move ``x``/``y`` to its device and dtype."""
    check_inputs(x, y)
    model.eval()
    dev, dtype = placement(model)
    return x.detach().to(dev, dtype), y.to(dev, torch.long)


class NotApplicableError(ValueError):
    """A method needs a kind of layer the model does not have (Grad-CAM without a conv)."""


def default_cam_layer(model: nn.Module) -> nn.Module:
    """The Grad-CAM layer, found by walking ``model``: the last conv's block when that
    block returns a ``(B, C, h, w)`` map, else the last conv itself
    (:func:`mnistlab.core.layers.cam_layer`).

    For ``MnistCNN`` this is the ``conv2`` block (conv-[bn]-pool-relu, output
    ``(B, C, 7, 7)``), the usual Grad-CAM layer.

    Raises:
        NotApplicableError: the model has no convolution.
    """
    found = cam_layer(model)
    if found is None:
        raise NotApplicableError(f"Grad-CAM: {NO_CONV}")
    return found[1]


def not_applicable(model: nn.Module) -> dict[str, str]:
    """Method -> why it cannot run on ``model``; empty when every method can.

    Only Grad-CAM needs a particular layer (a conv); the gradient, path and occlusion
    methods need nothing but the model's input and output.
    """
    return {} if cam_layer(model) is not None else {"grad_cam": NO_CONV}


# --------------------------------------------------------------------------- gradients


def saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Absolute input gradient of the class-``y`` logit (Captum ``Saliency``, ``abs=True``).

    Args:
        model: pixels ``(B, 1, 28, 28)`` -> logits ``(B, K)``.
        x: pixels in [0, 1], ``(B, 1, 28, 28)``.
        y: classes to explain, ``(B,)``.

    Returns:
        ``|d logit_y / d x|``, ``(B, 1, 28, 28)``, >= 0.
    """
    x, y = _prepare(model, x, y)
    attr = Saliency(model).attribute(x.requires_grad_(), target=y, abs=True)  # (B, 1, 28, 28)
    return attr.detach().cpu()


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 32,
    baseline: float | torch.Tensor = 0.0,
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated Gradients of the class-``y`` logit (Captum, Gauss-Legendre rule).

    Args:
        model: pixels ``(B, 1, 28, 28)`` -> logits ``(B, K)``.
        x: pixels in [0, 1], ``(B, 1, 28, 28)``.
        y: classes to explain, ``(B,)``.
        steps: points on the path from ``baseline`` to ``x``.
        baseline: pixel value (0 = black MNIST background) or a tensor like ``x``.
        internal_batch_size: path points per forward pass (None: all ``B * steps``).

    Returns:
        ``(attributions, delta)``: signed ``(B, 1, 28, 28)`` and ``(B,)`` convergence
        delta ``sum(attributions) - (logit_y(x) - logit_y(baseline))``.
    """
    x, y = _prepare(model, x, y)
    if isinstance(baseline, torch.Tensor):
        baseline = baseline.to(x.device, x.dtype)
    attr, delta = IntegratedGradients(model).attribute(
        x.requires_grad_(),
        baselines=baseline,
        target=y,
        n_steps=steps,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    return attr.detach().cpu(), delta.detach().cpu()


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    samples: int = 16,
    noise: float = 0.15,
    seed: int = 0,
) -> torch.Tensor:
    """SmoothGrad: Captum ``NoiseTunnel(Saliency)``, the mean ``|d logit_y / d x|`` over
    ``samples`` copies of ``x`` plus N(0, ``noise``^2) noise (Smilkov et al. 2017).

    NoiseTunnel draws its noise from torch's global generator of ``x``'s device; it is
    seeded with ``seed`` inside ``fork_rng``, so equal seeds give equal bytes and the
    caller's random state is left as it was.

    Args:
        model: pixels ``(B, 1, 28, 28)`` -> logits ``(B, K)``.
        x: pixels in [0, 1], ``(B, 1, 28, 28)``.
        y: classes to explain, ``(B,)``.
        samples: noisy copies per image (all in one batch of ``B * samples``).
        noise: standard deviation of the noise, in pixels.
        seed: seeds the noise.

    Returns:
        ``(B, 1, 28, 28)``, >= 0.
    """
    x, y = _prepare(model, x, y)
    devices = [x.device] if x.device.type != "cpu" else []
    with torch.random.fork_rng(devices=devices, device_type=x.device.type):
        torch.manual_seed(seed)
        attr = NoiseTunnel(Saliency(model)).attribute(
            x.requires_grad_(),
            nt_type="smoothgrad",
            nt_samples=samples,
            stdevs=float(noise),
            target=y,
            abs=True,
        )
    return attr.detach().cpu()


def integrated_gradients_noise(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 32,
    samples: int = 4,
    seed: int = 0,
) -> torch.Tensor:
    """Integrated Gradients from uniform-noise baselines, averaged over ``samples`` draws.

    One Captum call on ``samples`` stacked copies of the batch, each with its own
    U[0, 1] baseline from a generator seeded with ``seed`` (the same baselines on every
    call, e.g. at each step of the sanity check). Completeness holds on average:
    the maps sum to the mean of ``logit_y(x) - logit_y(noise_k)``.

    Args:
        model: pixels ``(B, 1, 28, 28)`` -> logits ``(B, K)``.
        x: pixels in [0, 1], ``(B, 1, 28, 28)``.
        y: classes to explain, ``(B,)``.
        steps: path points per baseline.
        samples: noise baselines per image.
        seed: seeds the baselines.

    Returns:
        Signed ``(B, 1, 28, 28)``, the mean over the baselines.
    """
    b = len(x)
    base = uniform_noise((samples * b, *x.shape[1:]), seed=seed)  # (S*B, 1, 28, 28)
    xs = x.repeat(samples, *([1] * (x.ndim - 1)))  # (S*B, 1, 28, 28), sample-major
    attr, _ = integrated_gradients(model, xs, y.repeat(samples), steps=steps, baseline=base)
    return attr.reshape(samples, b, *x.shape[1:]).mean(0)


def grad_cam(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, layer: nn.Module
) -> torch.Tensor:
    """Grad-CAM of the class-``y`` logit at ``layer``'s output, ReLU'd, upsampled to 28x28.

    Args:
        model: pixels ``(B, 1, 28, 28)`` -> logits ``(B, K)``.
        x: pixels in [0, 1], ``(B, 1, 28, 28)``.
        y: classes to explain, ``(B,)``.
        layer: a submodule with a ``(B, C, h, w)`` output, e.g. ``model.conv2``.

    Returns:
        ``(B, 1, 28, 28)``, >= 0 (bilinear upsampling of the ``(B, 1, h, w)`` map).
    """
    x, y = _prepare(model, x, y)
    cam = LayerGradCam(model, layer).attribute(  # (B, 1, h, w)
        x.requires_grad_(), target=y, relu_attributions=True
    )
    up = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return up.detach().cpu()  # (B, 1, 28, 28)


# --------------------------------------------------------------------------- occlusion


def occlusion_to_pixels(
    drops: torch.Tensor, *, patch: int, stride: int, size: int = IMAGE_SIZE
) -> torch.Tensor:
    """Per-position drops -> Captum-format per-pixel attributions.

    Each position's drop is added to the ``patch`` x ``patch`` pixels it covers; each
    pixel's sum is divided by the number of positions covering it (0 where none does).
    Computed in float64.

    Args:
        drops: ``(B, H', W')``, e.g. :attr:`OcclusionMaps.logit_drop`.
        patch: side of the patch.
        stride: step between positions.
        size: image side.

    Returns:
        ``(B, 1, size, size)`` float64.
    """
    h = len(patch_starts(patch, stride, size))
    if drops.ndim != 3 or drops.shape[1:] != (h, h):
        raise ValueError(
            f"drops must be (B, {h}, {h}) for patch={patch} stride={stride}, "
            f"got {tuple(drops.shape)}"
        )
    d = drops.detach().to(torch.float64)[:, None]  # (B, 1, H', W')
    kernel = torch.ones(1, 1, patch, patch, dtype=torch.float64, device=d.device)
    total = F.conv_transpose2d(d, kernel, stride=stride)  # (B, 1, L, L), L = (H'-1)*s + patch
    count = F.conv_transpose2d(torch.ones_like(d[:1]), kernel, stride=stride)  # (1, 1, L, L)
    pad = size - total.shape[-1]  # > 0 when (size - patch) % stride != 0
    total, count = F.pad(total, (0, pad, 0, pad)), F.pad(count, (0, pad, 0, pad))
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def occlusion_captum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    patch: int = 6,
    stride: int = 1,
    fill: float = 0.5,
    output: Literal["logit", "prob"] = "logit",
    perturbations_per_eval: int = 1,
) -> torch.Tensor:
    """Captum ``Occlusion`` with a ``(1, patch, patch)`` window, for reference.

    Args:
        model: pixels ``(B, 1, 28, 28)`` -> logits ``(B, K)``.
        x: pixels in [0, 1], ``(B, 1, 28, 28)``.
        y: target classes, ``(B,)``.
        patch: window side; ``sliding_window_shapes=(1, patch, patch)``.
        stride: ``strides=(1, stride, stride)``; must be <= ``patch`` (Captum's rule).
        fill: ``baselines``, the pixel value painted into the window.
        output: attribute the class-``y`` ``"logit"`` or softmax ``"prob"``.
        perturbations_per_eval: windows per forward pass (Captum's batching).

    Returns:
        Captum's per-pixel average window drop, ``(B, 1, 28, 28)`` float32; equals
        ``occlusion_to_pixels(occlusion(...).logit_drop)`` (or ``prob_drop``) when
        ``(28 - patch) % stride == 0``.
    """
    x, y = _prepare(model, x, y)
    if output == "logit":
        forward = model
    elif output == "prob":

        def forward(t: torch.Tensor) -> torch.Tensor:
            return softmax(model(t))
    else:
        raise ValueError(f"output must be 'logit' or 'prob', got {output!r}")
    with torch.no_grad():
        attr = Occlusion(forward).attribute(
            x,
            sliding_window_shapes=(1, patch, patch),
            strides=(1, stride, stride),
            baselines=float(fill),
            target=y,
            perturbations_per_eval=perturbations_per_eval,
        )
    return attr.detach().cpu()


def occlusion_pixels(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    patch: int = 6,
    stride: int = 1,
    fill: float = 0.5,
) -> torch.Tensor:
    """Occlusion as a per-pixel map: Captum-format average logit drop, ``(B, 1, 28, 28)``."""
    maps = occlusion_maps(model, x, y, patch=patch, stride=stride, fill=fill)
    px = occlusion_to_pixels(maps.logit_drop, patch=patch, stride=stride, size=x.shape[-1])
    return px.to(maps.logits.dtype)
