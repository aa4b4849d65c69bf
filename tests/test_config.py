"""params.yaml validation: every bad value is a one-line error naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers.params import params_with, raw_params
from mnistlab.core.config import MODEL_NAMES, Params, flatten, load_params, parse_params
from mnistlab.core.errors import ParamsError

REPO = Path(__file__).resolve().parents[1]


def test_committed_params_are_valid() -> None:
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.data.sources


def test_params_are_frozen() -> None:
    params = params_with({})
    with pytest.raises(Exception, match="frozen"):
        params.train.epochs = 3  # type: ignore[misc]


def test_model_overrides_merge_with_train_section() -> None:
    params = params_with({"train": {"lr": 0.01}, "models": {"cnn_bn": {"lr": 0.05}}})
    assert params.train_for("cnn").lr == 0.01
    assert params.train_for("cnn_bn").lr == 0.05
    assert params.train_for("cnn_bn").epochs == params.train.epochs


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"train": {"epocks": 3}}, "train.epocks: unknown key"),
        ({"train": {"epochs": -1}}, "train.epochs: Input should be greater than 0"),
        ({"train": {"epochs": "3"}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"lr": 0}}, "train.lr: Input should be greater than 0"),
        ({"train": {"optimizer": "lbfgs"}}, "train.optimizer:"),
        ({"models": {"resnet": {}}}, "models.resnet: Input should be 'cnn'"),
        ({"models": {"cnn_bn": {"lr": -0.1}}}, "models.cnn_bn.lr: Input should be greater than 0"),
        ({"models": {"cnn": {"lrr": 0.1}}}, "models.cnn.lrr: unknown key"),
        ({"data": {"sources": []}}, "data.sources: List should have at least 1 item"),
        ({"data": {"sources": ["ftp"]}}, "data.sources.0:"),
        ({"data": {"sources": ["local"]}}, "data.local_dir: required"),
        ({"device": "tpu"}, "device:"),
        ({"seed": 1.5}, "seed: Input should be a valid integer"),
        ({"train": {"channels_last": 1}}, "train.channels_last: Input should be a valid boolean"),
        ({"surprise": 1}, "surprise: unknown key"),
        ({"train": 3}, "train: Input should be a valid dictionary"),
    ],
)
def test_bad_params_name_the_key(raw: dict, needle: str) -> None:
    with pytest.raises(ParamsError) as info:
        params_with(raw)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("section", "key"),
    [("train", "epochs"), ("data", "local_dir"), ("attacks", "pgd"), (None, "seed")],
)
def test_missing_key_is_an_error(section: str | None, key: str) -> None:
    """No value comes from the code: a key absent from params.yaml is a one-line error."""
    raw = raw_params()
    del (raw[section] if section else raw)[key]
    full = f"{section}.{key}" if section else key
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert message == f"params.yaml: {full}: missing key"
    assert "\n" not in message


def test_missing_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    raw = raw_params()
    del raw["train"]["epochs"]
    path = _write(tmp_path, yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: train.epochs: missing key"


def test_empty_params_name_every_section() -> None:
    with pytest.raises(ParamsError) as info:
        parse_params({})
    message = str(info.value)
    for section in (
        "seed",
        "device",
        "data",
        "train",
        "models",
        "evaluate",
        "visualize",
        "attacks",
        "transfer",
    ):
        assert f"{section}: missing key" in message
    assert "\n" not in message


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_malformed_yaml_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  epochs: [1\n")
    with pytest.raises(ParamsError, match="malformed YAML at line") as info:
        load_params(path)
    assert "\n" not in str(info.value)


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  epochs: 1\n  epochs: 2\n")
    with pytest.raises(ParamsError, match="duplicate key 'epochs'"):
        load_params(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="cannot read params file"):
        load_params(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(_write(tmp_path, "- 1\n- 2\n"))


def test_flatten_nests_with_dots() -> None:
    params = params_with({})
    flat = flatten(params.attacks, "attacks")
    assert flat["attacks.pgd.steps"] == params.attacks.pgd.steps
    assert "attacks.pgd" not in flat


def test_model_names_match_registry() -> None:
    from mnistlab.core.models import REGISTRY

    assert set(REGISTRY) == set(MODEL_NAMES)
