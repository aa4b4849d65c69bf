"""Cascading model-parameter randomisation (Adebayo et al. 2018, "Sanity checks for
saliency maps").

Starting from a copy of the trained model, the layers are re-initialised one at a
time from the top (output) down, cumulatively, and after each step every
method's attribution is recomputed for the same images and classes. The Spearman
rank correlation of the *absolute* attributions (per image, over the 784 pixels, then
averaged over images) with the trained model's attribution measures how much the map
still looks the same. A method that explains the model should lose that resemblance
once the model is random; one that does not is mostly showing the input.

Absolute values follow Adebayo et al.: signed methods (IG, occlusion) may flip sign
under randomisation, which would otherwise read as a negative correlation. Note that
for input-multiplied methods on MNIST (IG with a black baseline gives exactly 0 on
the black background, ~80% of the pixels) the shared zero set alone keeps the rank
correlation high: that is the effect the check is designed to expose.

The layers are the model's own, found by walking it (:func:`randomization_steps`): each
parameterised layer, with the normalisation layer that directly follows it, is one step,
named after its block (``mnistlab.core.layers``); for ``MnistCNN`` the steps are
``fc2, fc1, conv2, conv1`` (``conv2`` the whole conv-[bn]-pool-relu block).

Verdict: a method *passes* when its mean correlation after the last (full)
randomisation step is below ``PASS_THRESHOLD = 0.5``, i.e. less than half of the rank
structure survives replacing every weight; a heuristic cut, not a statistical test.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from mnistlab.core.layers import trace, units

AttributionFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

ORIGINAL = "original"
"""Table key of the unrandomised model (correlation of each method with itself)."""
PASS_THRESHOLD = 0.5


def _param_names(model: nn.Module, path: str, *, recurse: bool) -> list[str]:
    """Names in ``model.named_parameters()`` of the submodule ``path``'s parameters."""
    prefix = f"{path}." if path else ""
    own = model.get_submodule(path).named_parameters(recurse=recurse)
    return [prefix + name for name, _ in own]


def randomization_steps(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Step name -> the parameters it redraws, in order; steps top (output) to bottom.

    One step per parameterised layer of ``model``, in reverse forward order; a
    normalisation layer directly following a layer in its container joins that layer's
    step. A step whose layers fill a block on their own (a submodule holding no other
    parameters) is named after the block and redraws all of it; else it is named after
    its first layer and redraws its layers' own parameters. For ``MnistCNN`` the steps
    are ``fc2``, ``fc1``, ``conv2`` (``conv2.conv.weight``, ``conv2.conv.bias``, then the
    BatchNorm's when it has one) and ``conv1``; for an ``nn.Sequential`` MLP ``"5"``,
    ``"3"``, ``"1"``.
    """
    steps = {}
    for unit in reversed(units(trace(model))):
        if unit.block:
            steps[unit.name] = tuple(_param_names(model, unit.block, recurse=True))
        else:
            steps[unit.name] = tuple(
                n for path in unit.paths for n in _param_names(model, path, recurse=False)
            )
    return steps


@torch.no_grad()
def _redraw_(p: torch.Tensor, generator: torch.Generator) -> None:
    """Redraw ``p`` from a normal with its own mean and std (see :func:`randomize_layer_`)."""
    if p.numel() < 2:
        return
    mean, std = p.mean(), p.std()
    if float(std) == 0.0:
        return
    noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
    p.copy_((noise * float(std) + float(mean)).to(p.dtype))


@torch.no_grad()
def randomize_layer_(layer: nn.Module, *, generator: torch.Generator) -> None:
    """Re-initialise every parameter of ``layer`` in place.

    Each parameter tensor is redrawn from a normal distribution with its own current
    mean and standard deviation (conv/linear weights: ~N(0, std), so the scale of the
    activations is kept; BatchNorm scales stay near their mean). Tensors with a single
    element or zero spread (e.g. a fresh BatchNorm's ones) are left unchanged. Buffers
    (BatchNorm running statistics) are kept.

    Args:
        layer: a submodule, e.g. ``model.fc2`` or the ``model.conv1`` block.
        generator: CPU ``torch.Generator``, the only source of randomness.
    """
    for p in layer.parameters():
        _redraw_(p, generator)


def spearman_abs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of ``|a|`` and ``|b|`` per image (ties get average ranks).

    Args:
        a: ``(B, ...)`` attributions.
        b: ``(B, ...)`` attributions, same shape.

    Returns:
        ``(B,)`` float64 in [-1, 1]; 0 for an image where either map is constant.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    ra = rankdata(a.detach().abs().flatten(1).double().cpu().numpy(), axis=1)  # (B, P)
    rb = rankdata(b.detach().abs().flatten(1).double().cpu().numpy(), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    num = (ra * rb).sum(1)
    rho = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return torch.from_numpy(np.clip(rho, -1.0, 1.0))


def cascading_randomization(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    methods: Mapping[str, AttributionFn],
    *,
    generator: torch.Generator,
    layers: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Mean Spearman correlation of each method's map with the trained model's, per step.

    ``model`` is not modified: the layers of a deep copy are randomised cumulatively,
    top to bottom (:func:`randomization_steps`), or in the order of ``layers``. Each
    method must find what it needs (e.g. the Grad-CAM layer) from the model it is given,
    as the methods of ``mnistlab.attribution.registry`` do, not from the original model.

    Args:
        model: pixels ``(B, 1, 28, 28)`` -> logits ``(B, K)``.
        x: pixels in [0, 1], ``(B, 1, 28, 28)``.
        y: classes explained (the same at every step), ``(B,)``.
        methods: name -> ``(model, x, y) -> (B, 1, 28, 28)`` attribution.
        generator: CPU ``torch.Generator`` for the new weights.
        layers: submodule names, randomised in this order (each whole); None: the
            model's own steps, found by walking it.

    Returns:
        ``{step: {method: mean rho}}`` with steps ``"original"`` (1.0: each map with
        itself) then each step name; the ``k``-th step has steps ``0..k``
        randomised. Insertion order is step order. Means are over the images whose
        trained-model map is not constant (NaN if there is none); a randomised map
        that is constant counts as rho 0.
    """
    reference = {name: fn(model, x, y) for name, fn in methods.items()}
    # An image whose trained-model map is constant (e.g. an all-zero ReLU'd Grad-CAM)
    # has no ranking to compare with: it is left out of that method's mean.
    informative = {
        name: a.flatten(1).amax(1) > a.flatten(1).amin(1) for name, a in reference.items()
    }  # (B,) bool each

    def mean_rho(name: str, attr: torch.Tensor) -> float:
        keep = informative[name]
        if not keep.any():
            return float("nan")
        return float(spearman_abs(reference[name][keep], attr[keep]).mean())

    table = {ORIGINAL: {name: mean_rho(name, a) for name, a in reference.items()}}
    if layers is None:
        steps = randomization_steps(model)
    else:
        steps = {layer: tuple(_param_names(model, layer, recurse=True)) for layer in layers}
    randomized = copy.deepcopy(model)
    params = dict(randomized.named_parameters(remove_duplicate=False))  # tied: every name
    for step, names in steps.items():
        for param in names:  # in the order of the step's parameters, as randomize_layer_
            _redraw_(params[param], generator)
        table[step] = {name: mean_rho(name, fn(randomized, x, y)) for name, fn in methods.items()}
    return table


def sanity_verdict(
    table: Mapping[str, Mapping[str, float]], *, threshold: float = PASS_THRESHOLD
) -> dict[str, bool]:
    """Method -> passes, i.e. mean rho at the last (fully randomised) step < ``threshold``
    (False for NaN)."""
    last = list(table)[-1]
    return {name: rho < threshold for name, rho in table[last].items()}
