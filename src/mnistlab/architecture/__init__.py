"""Layer-by-layer accounting of a model: shapes, weights, biases, parameters, neurons.

Everything is measured from the real modules (forward hooks for shapes, parameter
tensors for counts), never typed in, for any classifier of ``(B, 1, 28, 28)`` pixels.
The rows are the conv, linear, BatchNorm and max-pool layers, and any other module with
parameters of its own, in the order of their first call in ``forward``. Neurons are
counted as the reference report does: one per output channel of a conv layer, one per
output unit of a linear layer; pooling, activations and BatchNorm have none.
"""

from __future__ import annotations

import torch
from torch import nn

from mnistlab.core.layers import placement
from mnistlab.core.params_types import IMAGE_SIZE

COUNTED = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.Linear)


def _neurons(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    return 0


def describe(model: nn.Module) -> dict:
    """Per-layer shapes and counts plus totals, from one forward pass of a dummy image.

    A module called twice in ``forward`` is one row (its first call). ``total_params``
    counts the model's parameters themselves.
    """
    layers: list[dict] = []
    hooks = []
    seen: set[int] = set()

    def hook(name: str):
        def fn(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if id(module) in seen:
                return
            seen.add(id(module))
            weight = getattr(module, "weight", None)
            bias = getattr(module, "bias", None)
            n_w = weight.numel() if isinstance(weight, torch.Tensor) else 0
            n_b = bias.numel() if isinstance(bias, torch.Tensor) else 0
            layers.append(
                {
                    "name": name,
                    "type": type(module).__name__,
                    "input_shape": list(inputs[0].shape[1:]),
                    "output_shape": list(output.shape[1:]),
                    "weights": n_w,
                    "biases": n_b,
                    "params": sum(p.numel() for p in module.parameters(recurse=False)),
                    "neurons": _neurons(module),
                }
            )

        return fn

    for name, module in model.named_modules():
        own = next(module.parameters(recurse=False), None) is not None
        if isinstance(module, COUNTED) or own:
            hooks.append(module.register_forward_hook(hook(name)))
    modes = {m: m.training for m in model.modules()}
    dev, dtype = placement(model)
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, device=dev, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes.items():
            m.training = training

    def total(kind: type, key: str) -> int:
        return sum(layer[key] for layer in layers if layer["type"] == kind.__name__)

    total_params = sum(p.numel() for p in model.parameters())
    return {
        "total_params": total_params,
        "conv_params": total(nn.Conv2d, "params"),
        "fc_params": total(nn.Linear, "params"),
        "bn_params": total(nn.BatchNorm2d, "params"),
        "total_neurons": sum(layer["neurons"] for layer in layers),
        "conv_neurons": total(nn.Conv2d, "neurons"),
        "fc_neurons": total(nn.Linear, "neurons"),
        "layers": layers,
    }


def markdown_table(model_name: str, info: dict) -> str:
    """The layer table as Markdown (shapes as C x H x W)."""

    def shape(s: list[int]) -> str:
        return " x ".join(map(str, s))

    lines = [
        f"# {model_name}: layers, parameters and neurons",
        "",
        "| layer | type | input | output | weights | biases | params | neurons |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for layer in info["layers"]:
        lines.append(
            f"| {layer['name']} | {layer['type']} | {shape(layer['input_shape'])} | "
            f"{shape(layer['output_shape'])} | {layer['weights']:,} | {layer['biases']:,} | "
            f"{layer['params']:,} | {layer['neurons']:,} |"
        )
    lines += [
        f"| **total** | | | | | | **{info['total_params']:,}** | **{info['total_neurons']:,}** |",
        "",
        f"Conv parameters: {info['conv_params']:,}; fully connected: {info['fc_params']:,}; "
        f"BatchNorm: {info['bn_params']:,}. Neurons: {info['conv_neurons']} in conv layers, "
        f"{info['fc_neurons']} in fully connected layers.",
        "",
    ]
    return "\n".join(lines)
