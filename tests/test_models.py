"""The models: shapes, the report's parameter/neuron counts, the registry, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.archs import MLP, BlockCNN, FlatCNN
from helpers.study import MODELS, PARAMS, build_model
from helpers.study import save as save_checkpoint
from mnistlab.architecture import describe, markdown_table
from mnistlab.core import archs
from mnistlab.core.errors import CheckpointError
from mnistlab.core.models import load_checkpoint

# The models built on the study's CNN architecture (core/archs/cnn.py).
STUDY_CNNS = tuple(m for m in MODELS if PARAMS.models[m].arch == "cnn")


@pytest.mark.parametrize("name", MODELS)
def test_output_shape(name: str) -> None:
    model = build_model(name).eval()
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)


@pytest.mark.parametrize(
    ("arch", "args"),
    [
        ("mlp", {"hidden": [512, 256]}),
        ("convnet", {"channels": [64, 128], "hidden": 256, "batch_norm": False}),
        ("convnet", {"channels": [8, 16, 32], "hidden": 32, "batch_norm": True}),
    ],
)
def test_shipped_architectures_classify_mnist(arch: str, args: dict) -> None:
    model = archs.build(arch, args).eval()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    x = torch.zeros(1, 1, 28, 28)  # normalised inside forward: 0 is not the mean
    assert model.mean == pytest.approx(archs.MNIST_MEAN) and model.std == pytest.approx(
        archs.MNIST_STD
    )
    assert torch.isfinite(model(x)).all()


def test_registry_lists_the_modules_and_checks_keywords() -> None:
    assert archs.known() == ["cnn", "convnet", "mlp"]
    with pytest.raises(ValueError, match="width: unknown keyword of architecture 'mlp'"):
        archs.build("mlp", {"hidden": [8], "width": 3})
    with pytest.raises(ValueError, match="hidden: missing keyword of architecture 'mlp'"):
        archs.build("mlp", {})
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        archs.build("resnet", {})


def test_cnn_counts_match_the_report() -> None:
    info = describe(build_model("cnn"))
    params = [layer["params"] for layer in info["layers"] if layer["params"]]
    assert params == [320, 9248, 784500, 5010]
    assert info["total_params"] == 799_078
    assert info["conv_params"] == 9_568
    assert info["fc_params"] == 789_510
    neurons = [layer["neurons"] for layer in info["layers"] if layer["neurons"]]
    assert neurons == [32, 32, 500, 10]
    assert info["total_neurons"] == 574
    outputs = [layer["output_shape"] for layer in info["layers"]]
    assert outputs == [[32, 28, 28], [32, 14, 14], [32, 14, 14], [32, 7, 7], [500], [10]]
    assert "**799,078**" in markdown_table("cnn", info)


def test_cnn_bn_adds_only_batchnorm_params() -> None:
    plain, bn = describe(build_model("cnn")), describe(build_model("cnn_bn"))
    assert bn["total_params"] - plain["total_params"] == bn["bn_params"] == 2 * 2 * 32
    assert bn["total_neurons"] == plain["total_neurons"]


def test_describe_an_mlp() -> None:
    """No conv: only the linear layers have rows; neurons are their output units."""
    info = describe(MLP(h1=32, h2=16))
    assert [layer["name"] for layer in info["layers"]] == ["net.1", "net.3", "net.5"]
    assert [layer["params"] for layer in info["layers"]] == [784 * 32 + 32, 32 * 16 + 16, 170]
    assert [layer["output_shape"] for layer in info["layers"]] == [[32], [16], [10]]
    assert info["layers"][0]["input_shape"] == [784]
    assert info["total_params"] == info["fc_params"] == 25_818
    assert info["conv_params"] == info["conv_neurons"] == info["bn_params"] == 0
    assert info["total_neurons"] == info["fc_neurons"] == 32 + 16 + 10
    assert "**25,818**" in markdown_table("mlp", info)


def test_describe_a_three_conv_cnn() -> None:
    info = describe(BlockCNN((4, 6, 8), hidden=16, batch_norm=True))
    convs = [layer for layer in info["layers"] if layer["type"] == "Conv2d"]
    assert [c["name"] for c in convs] == ["features.0.0", "features.1.0", "features.2.0"]
    assert [c["output_shape"] for c in convs] == [[4, 28, 28], [6, 14, 14], [8, 7, 7]]
    assert [c["params"] for c in convs] == [4 * 9 + 4, 6 * 4 * 9 + 6, 8 * 6 * 9 + 8]
    assert info["conv_neurons"] == 4 + 6 + 8 and info["bn_params"] == 2 * (4 + 6 + 8)
    assert info["layers"][-1]["output_shape"] == [10]
    assert info["total_params"] == sum(layer["params"] for layer in info["layers"])


def test_describe_any_parameterised_layer_in_any_dtype() -> None:
    """A layer type outside the usual ones still counts (its own row); a float64 model
    is fed a float64 image; a module called twice is one row; modes are restored."""
    model = torch.nn.Sequential(FlatCNN(), torch.nn.LayerNorm(10)).double()
    model.train()
    model[0].eval()
    info = describe(model)
    assert info["layers"][-1]["type"] == "LayerNorm" and info["layers"][-1]["params"] == 20
    assert info["total_params"] == sum(p.numel() for p in model.parameters())
    assert info["total_params"] == sum(layer["params"] for layer in info["layers"])
    assert model.training and not model[0].training and model[1].training

    class Twice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.flat, self.fc = torch.nn.Linear(784, 10), torch.nn.Linear(10, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.fc(self.flat(x.flatten(1))))

    info = describe(Twice())
    assert [layer["name"] for layer in info["layers"]] == ["flat", "fc"]


def test_model_normalises_inside_forward() -> None:
    model = build_model("cnn").eval()
    x = torch.rand(3, 1, 28, 28)
    manual = (x - model.mean) / model.std
    h = model.conv2(model.conv1(manual)).flatten(1)
    expected = model.fc2(torch.relu(model.fc1(h)))
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("name", STUDY_CNNS)
def test_relu_after_pool_is_the_textbook_block_bit_for_bit(name: str) -> None:
    """The blocks pool before their ReLU (4x fewer elements to rectify); the logits and
    the input gradient equal conv-[bn]-ReLU-pool's exactly, ties and zeros included."""
    torch.manual_seed(0)
    model = build_model(name).eval()

    def textbook(x: torch.Tensor) -> torch.Tensor:
        x = (x - model.mean) / model.std
        for block in (model.conv1, model.conv2):
            h = block.conv(x)
            h = block.bn(h) if hasattr(block, "bn") else h
            x = block.pool(torch.relu(h))
        return model.fc2(torch.relu(model.fc1(x.flatten(1))))

    x = torch.rand(16, 1, 28, 28)
    x[:4] = 0.0  # flat images: every pool window ties
    grads = []
    for fn in (model, textbook):
        v = x.clone().requires_grad_(True)
        out = fn(v)
        (g,) = torch.autograd.grad(out.pow(2).sum(), v)
        grads.append((out.detach(), g))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.equal(grads[0][1], grads[1][1])


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = build_model("cnn_bn")
    with torch.no_grad():
        model.conv1.bn.running_mean.add_(1.0)
    save_checkpoint(tmp_path / "m.pt", model, "cnn_bn", {"seed": 1})
    loaded, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["model"] == "cnn_bn" and ckpt["params"] == {"seed": 1}
    assert not loaded.training
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path: Path) -> None:
    """``cnn_bn.pt`` copied over ``cnn.pt``: loading it as ``cnn`` names both models."""
    path = tmp_path / "cnn.pt"
    save_checkpoint(path, build_model("cnn_bn"), "cnn_bn", {})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, expected="cnn")
    message = str(info.value)
    assert "'cnn_bn'" in message and "'cnn'" in message
    assert str(path) in message and "\n" not in message
    loaded, ckpt = load_checkpoint(path, expected="cnn_bn")  # the right name loads
    assert ckpt["model"] == "cnn_bn" and hasattr(loaded.conv1, "bn")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model("cnn"), "cnn", {})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or incompatible checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="checkpoint missing"):
        load_checkpoint(tmp_path / "absent.pt")


def test_checkpoints_are_byte_identical(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("cnn")
    save_checkpoint(tmp_path / "a.pt", model, "cnn", {"seed": 0})
    save_checkpoint(tmp_path / "b.pt", model, "cnn", {"seed": 0})
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_checkpoint_of_edited_architecture_code_is_refused(tmp_path: Path) -> None:
    """The checkpoint records its architecture's source digest: weights trained with
    other code are refused in one line that says what to rerun."""
    import torch as _t

    path = tmp_path / "cnn.pt"
    save_checkpoint(path, build_model("cnn"), "cnn", {})
    ckpt = _t.load(path, weights_only=True)
    ckpt["arch_digest"] = "0" * 64
    _t.save(ckpt, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, expected="cnn")
    assert "trained with other code of architecture 'cnn'" in str(info.value)
    assert "dvc repro train@cnn" in str(info.value)
