"""The two CNNs: shapes, the report's parameter/neuron counts, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnistlab.architecture import describe, markdown_table
from mnistlab.core.errors import CheckpointError
from mnistlab.core.models import build_model, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("name", ["cnn", "cnn_bn"])
def test_output_shape(name: str) -> None:
    model = build_model(name).eval()
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    feats = model.features(torch.rand(2, 1, 28, 28))
    assert feats["conv1"].shape == (2, 32, 28, 28)
    assert feats["conv2"].shape == (2, 32, 14, 14)
    assert (feats["conv1"] >= 0).all()  # post-ReLU


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


def test_model_normalises_inside_forward() -> None:
    model = build_model("cnn").eval()
    x = torch.rand(3, 1, 28, 28)
    manual = (x - model.mean) / model.std
    h = model.conv2(model.conv1(manual)).flatten(1)
    expected = model.fc2(torch.relu(model.fc1(h)))
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("name", ["cnn", "cnn_bn"])
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
