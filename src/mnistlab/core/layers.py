"""Finding a model's layers by introspection, for any classifier of MNIST pixels.

The stages that read a trained model (visualize, attribution) must work for any module
mapping ``(B, 1, 28, 28)`` pixels to ``(B, 10)`` logits, not only for the study's CNN: so
nothing here names an attribute (``model.conv1``, ``block.conv``). One forward pass of a
blank image (:func:`trace`) records which submodules run, in which order, and the shape
of what each returns; the layers are read off that trace:

* a *unit* is a parameterised layer (a module with parameters of its own) together with
  the normalisation layer that directly follows it in the same container (a conv and its
  BatchNorm): what the sanity check randomises as one step;
* a unit's *block* is the outermost submodule (the model itself excluded) whose
  parameterised layers are exactly the unit's, e.g. ``MnistCNN.conv2``, the
  ``nn.Sequential`` conv-[bn]-pool-relu; a unit without one (a layer whose container
  holds other parameterised layers too) is named and randomised by its own modules;
* the Grad-CAM layer (:func:`cam_layer`) is the last conv's block when that block returns
  a ``(B, C, h, w)`` map, else the last conv itself.

The order is the order of the first call in ``forward`` (not of registration), so a
model that registers its classifier before its features still reads bottom-up.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from mnistlab.core.params_types import IMAGE_SIZE

NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.LayerNorm,
)
"""Normalisation layers, which join the unit of the layer they directly follow."""
NO_CONV = "no Conv2d layer"
"""Why a conv-only output (filters, feature maps, Grad-CAM) is not applicable."""


def placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and float dtype of the model's first floating parameter or buffer
    (CPU float32 for a stateless model); inputs are moved to match."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


@dataclasses.dataclass(frozen=True)
class Call:
    """One submodule that ran in the traced forward pass (its first call)."""

    path: str  # its name in ``model.named_modules()``; "" for the model itself
    module: nn.Module
    output_shape: tuple[int, ...] | None  # without the batch dim; None for a non-tensor

    @property
    def parent(self) -> str:
        """Path of the container it sits in ("" for a child of the model)."""
        return self.path.rpartition(".")[0]

    @property
    def is_leaf(self) -> bool:
        return next(self.module.children(), None) is None

    @property
    def has_params(self) -> bool:
        """Holds parameters of its own (not only through children)."""
        return next(self.module.parameters(recurse=False), None) is not None


@dataclasses.dataclass(frozen=True)
class Unit:
    """A parameterised layer and its normalisation layer, if one directly follows it."""

    paths: tuple[str, ...]  # forward order, e.g. ("conv2.conv", "conv2.bn")
    block: str | None  # the outermost submodule holding exactly these layers' parameters

    @property
    def name(self) -> str:
        """The block's path, else the layer's; ``"model"`` for the model's own parameters."""
        return self.block or self.paths[0] or "model"


def trace(model: nn.Module) -> list[Call]:
    """Every submodule that runs in one forward pass of a blank image, by first call.

    The pass runs under ``no_grad`` in eval mode (BatchNorm statistics stay as they are);
    each module's own train/eval flag is restored afterwards. A module that never runs in
    ``forward`` is not listed: it takes no part in what the model computes.
    """
    calls: dict[int, list] = {}  # id(module) -> [path, module, output shape]; call order

    def pre(path: str):
        def fn(module: nn.Module, inputs: tuple) -> None:
            calls.setdefault(id(module), [path, module, None])

        return fn

    def post(module: nn.Module, inputs: tuple, output: object) -> None:
        entry = calls[id(module)]
        if entry[2] is None and isinstance(output, torch.Tensor):
            entry[2] = tuple(output.shape[1:])

    modes = {m: m.training for m in model.modules()}
    hooks = []
    for path, module in model.named_modules():
        hooks.append(module.register_forward_pre_hook(pre(path)))
        hooks.append(module.register_forward_hook(post))
    dev, dtype = placement(model)
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, device=dev, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training
    return [Call(path, module, shape) for path, module, shape in calls.values()]


def _within(path: str, ancestor: str) -> bool:
    """``path`` is ``ancestor`` or lies inside it."""
    return path == ancestor or path.startswith(ancestor + ".")


def _ancestors(path: str) -> list[str]:
    """Enclosing submodule paths of ``path``, outermost first, the model ("") excluded."""
    parts = path.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def _norm_after(calls: list[Call], layer: Call) -> Call | None:
    """The normalisation layer run right after ``layer`` (the next leaf module called) in
    the same container, e.g. ``conv2.bn`` after ``conv2.conv``; None if there is none."""
    leaves = [c for c in calls if c.is_leaf]
    k = next((i for i, c in enumerate(leaves) if c is layer), None)
    if k is None or k + 1 == len(leaves) or isinstance(layer.module, NORMS):
        return None
    nxt = leaves[k + 1]
    return nxt if isinstance(nxt.module, NORMS) and nxt.parent == layer.parent else None


def _blocks(calls: list[Call], paths: tuple[str, ...]) -> list[Call]:
    """Submodules enclosing ``paths[0]`` whose parameterised modules are exactly ``paths``,
    outermost first (the model itself excluded; only submodules that ran)."""
    by_path = {c.path: c for c in calls}
    owners = [c.path for c in calls if c.has_params]
    return [
        by_path[a]
        for a in _ancestors(paths[0])
        if a in by_path and {p for p in owners if _within(p, a)} == set(paths)
    ]


def units(calls: list[Call]) -> list[Unit]:
    """The parameterised units in forward order (bottom, input side, first).

    For ``MnistCNN``: ``conv1``, ``conv2`` (each the block: conv, with its BatchNorm when
    it has one), ``fc1``, ``fc2``.
    """
    groups: list[list[Call]] = []
    for c in calls:
        if not c.has_params:
            continue
        if groups and len(groups[-1]) == 1 and _norm_after(calls, groups[-1][0]) is c:
            groups[-1].append(c)  # the layer's normalisation
        else:
            groups.append([c])
    out = []
    for group in groups:
        paths = tuple(c.path for c in group)
        blocks = _blocks(calls, paths)
        out.append(Unit(paths=paths, block=blocks[0].path if blocks else None))
    return out


def conv_calls(calls: list[Call]) -> list[Call]:
    """The ``nn.Conv2d`` layers, in forward order."""
    return [c for c in calls if isinstance(c.module, nn.Conv2d)]


def conv_names(convs: list[Call]) -> list[str]:
    """Display names ``conv1``, ``conv2``, ... in forward order: the same for every CNN, so
    a figure name says which conv it shows whatever the model calls its modules."""
    return [f"conv{i}" for i in range(1, len(convs) + 1)]


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """``{"conv1": first Conv2d, "conv2": ...}`` in forward order; empty for a model
    without convolutions."""
    convs = conv_calls(trace(model))
    return {n: c.module for n, c in zip(conv_names(convs), convs, strict=True)}


def rectified_outputs(model: nn.Module) -> dict[str, nn.Module]:
    """Conv name -> the module whose output the conv's feature map is read from: the
    BatchNorm (or other normalisation) directly following the conv in its container if
    there is one, else the conv itself. For ``MnistCNN``: ``conv1.bn`` (or ``conv1.conv``)."""
    calls = trace(model)
    convs = conv_calls(calls)
    out = {}
    for name, conv in zip(conv_names(convs), convs, strict=True):
        norm = _norm_after(calls, conv)
        out[name] = (norm or conv).module
    return out


def cam_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(path, module)`` of the Grad-CAM layer, or None for a model without a Conv2d.

    The last conv's block (its outermost enclosing submodule whose only parameterised
    layers are the conv and its normalisation) when that block returns a ``(C, h, w)`` map;
    else the last conv itself. For ``MnistCNN`` the ``conv2`` block, conv-[bn]-pool-relu,
    ``(B, C, 7, 7)``: Grad-CAM reads the rectified, pooled map the classifier sees.
    """
    calls = trace(model)
    convs = conv_calls(calls)
    if not convs:
        return None
    last = convs[-1]
    unit = next(u for u in units(calls) if last.path in u.paths)
    for block in _blocks(calls, unit.paths):  # outermost first
        if block.output_shape is not None and len(block.output_shape) == 3:  # (C, h, w)
            return block.path, block.module
    return last.path, last.module
