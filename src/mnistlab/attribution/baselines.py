"""Reference images: what Integrated Gradients starts from and what a deleted pixel becomes.

A black image is MNIST's background, so both IG from black and deletion to black single
out the bright pixels whatever the model does (the attribution is ``x * gradient``, the
deletion removes the digit). The references here carry information instead (Sturmfels
et al. 2020, "Visualizing the impact of feature attribution baselines"):

* ``gaussian_blur``: the image with its strokes blurred away, the same digit's mass in
  the same place; the blur fill of the deletion curves and an IG baseline.
* ``uniform_noise``: seeded U[0, 1] images, an IG baseline averaged over several draws.
* ``mean_image``: the training set's mean digit, an IG baseline.

All are deterministic: the blur is computed in float64 on the CPU, the noise comes from
its own seeded generator, the mean is an exact integer sum.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def gaussian_kernel(sigma: float, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian, ``(2r + 1,)`` float64, ``r = min(ceil(3 sigma), size - 1)``:
    3 sigma holds 99.7% of the mass, and no pixel is further than ``size - 1`` from another."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    r = min(math.ceil(3 * sigma), size - 1)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Normalised Gaussian blur of each image: the weighted mean of the pixels *inside* the
    image, so a constant image stays constant (zero padding would darken the border).

    Args:
        x: ``(B, C, H, W)`` pixels, any device and float dtype.
        sigma: standard deviation in pixels.

    Returns:
        ``(B, C, H, W)`` like ``x`` (same device and dtype), in ``x``'s value range.
    """
    b, c, h, w = x.shape
    k = gaussian_kernel(sigma, max(h, w))  # (K,)
    r = (len(k) - 1) // 2

    def smooth(img: torch.Tensor) -> torch.Tensor:  # (N, 1, H, W) float64, separable
        img = F.conv2d(img, k.view(1, 1, 1, -1), padding=(0, r))  # along rows
        return F.conv2d(img, k.view(1, 1, -1, 1), padding=(r, 0))  # along columns

    xd = x.detach().cpu().to(torch.float64).reshape(b * c, 1, h, w)
    weight = smooth(torch.ones(1, 1, h, w, dtype=torch.float64))  # (1, 1, H, W) mass inside
    out = (smooth(xd) / weight).reshape(b, c, h, w)
    return out.to(x.device, x.dtype)


def uniform_noise(
    shape: tuple[int, ...], *, seed: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """U[0, 1] images of ``shape`` on the CPU from a generator seeded with ``seed`` (the
    same draw on every call, so the sanity check compares like with like)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen, dtype=dtype)


def mean_image(images: torch.Tensor) -> torch.Tensor:
    """The mean digit of uint8 ``images`` ``(N, 28, 28)``, as pixels ``(1, 1, 28, 28)``
    float32 in [0, 1]; an exact int64 sum, so the order of the images does not matter."""
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(
            f"images must be uint8 (N, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    total = images.to(torch.int64).sum(0)  # (28, 28) exact
    return (total.to(torch.float64) / (255.0 * len(images))).float()[None, None]


def fill_image(x: torch.Tensor, fill: str, *, sigma: float) -> torch.Tensor:
    """What each pixel of ``x`` ``(B, 1, H, W)`` becomes when deleted: ``"black"`` 0,
    ``"blur"`` the pixel of :func:`gaussian_blur` ``(x, sigma)``. Same shape as ``x``."""
    if fill == "black":
        return torch.zeros_like(x)
    if fill == "blur":
        return gaussian_blur(x, sigma)
    raise ValueError(f"fill must be 'black' or 'blur', got {fill!r}")
