"""params.yaml validation: every bad value is a one-line error naming its key.

Bad values and unreadable files go through ``load_params()`` the way every stage calls
it first (:func:`_load_as_a_stage`); tests/test_reliability.py runs two of them through a
real stage process, end to end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from helpers.params import params_with, raw_params
from mnistlab.core.config import (
    MAX_PARAMS_BYTES,
    Params,
    deep_merge,
    flatten,
    load_params,
    parse_params,
)
from mnistlab.core.errors import ParamsError

REPO = Path(__file__).resolve().parents[1]


def _load_as_a_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: dict | bytes
) -> ParamsError:
    """Write ``params`` (a mapping as YAML, or raw bytes) to ``params.yaml`` in an empty
    folder and load it as a stage does (``load_params()`` in its working directory);
    returns the ParamsError it must raise, after checking that nothing was written."""
    text = params if isinstance(params, bytes) else yaml.safe_dump(params).encode()
    (tmp_path / "params.yaml").write_bytes(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError) as info:
        load_params()
    assert os.listdir(tmp_path) == ["params.yaml"]
    assert (tmp_path / "params.yaml").read_bytes() == text
    return info.value


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


# Out-of-range values: the same one line, naming the limit.
LIMITS = [
    ({"train": {"epochs": 1001}}, "train.epochs: Input should be less than or equal to 1000"),
    ({"seed": 2**64}, "seed: Input should be less than 4294967296"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"train": {"lr": float("nan")}}, "train.lr:"),
    ({"train": {"lr": float("inf")}}, "train.lr:"),
    (
        {"attacks": {"noise": {"n_transfer_same": 0, "n_transfer_other": 0}}},
        "attacks.noise.n_transfer_same: n_transfer_same + n_transfer_other must be at least 1",
    ),
    (
        {"attacks": {"strong": {"standard": {"eps": [0.2]}}}},
        "attacks.strong.standard.eps: 0.2 not in eps (0.1, 0.3)",
    ),
    (
        {"attacks": {"strong": {"standard": {"n_targets": 10}}}},
        "attacks.strong.standard.n_targets:",
    ),
    (
        {"models": {"cnn_adv": {"adversarial": {"method": "mart"}}}},
        "models.cnn_adv.adversarial.method: Input should be 'pgd', 'fgsm_rs' or 'trades'",
    ),
    ({"models": {"cnn_adv": {"adversarial": {"beta": -1}}}}, "models.cnn_adv.adversarial.beta:"),
]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"train": {"epocks": 3}}, "train.epocks: unknown key"),
        ({"train": {"epochs": -1}}, "train.epochs: Input should be greater than 0"),
        ({"train": {"epochs": "3"}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"lr": 0}}, "train.lr: Input should be greater than 0"),
        ({"train": {"optimizer": "lbfgs"}}, "train.optimizer:"),
        (
            {"models": {"resnet": {"arch": "resnet", "arch_args": {}}}},
            "models.resnet.arch: unknown architecture 'resnet' (known are cnn, convnet, mlp)",
        ),
        ({"models": {"resnet": {"arch_args": {}}}}, "models.resnet.arch: missing key"),
        ({"models": {"resnet": {}}}, "models.resnet.arch: missing key"),
        (
            {"models": {"bad-name": {"arch": "mlp", "arch_args": {"hidden": [8]}}}},
            "models.bad-name: not a valid name",
        ),
        (
            {"attacks": {"deepfool": {"steps": 3}}},
            "attacks.deepfool: unknown attack form (the code provides: class_model, fgsm, noise, "
            "pgd, random_noise, strong, targeted)",
        ),
        ({"attacks": {"pgd": {"stepz": 3}}}, "attacks.pgd.stepz: unknown key"),
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
        (
            {"attacks": {"class_model": {"synthesis": {"init": "zeros"}}}},
            "attacks.class_model.synthesis.init: Input should be 'mean', 'class_mean' or 'noise'",
        ),
        (
            {"attacks": {"class_model": {"synthesis": {"eps": 3.0}}}},
            "attacks.class_model.synthesis.eps: unknown key",
        ),
        ({"attacks": {"class_model": {"knn_k": 0}}}, "attacks.class_model.knn_k: Input should be"),
        ({"attacks": {"targeted": {"targets": [2, 10]}}}, "attacks.targeted.targets.1:"),
        ({"attacks": {"fgsm": {"eps": [0.1, -0.1]}}}, "attacks.fgsm.eps.1:"),
        ({"attacks": {"pgd": {"eps": []}}}, "attacks.pgd.eps:"),
        ({"attacks": {"pgd": {"steps": 0}}}, "attacks.pgd.steps:"),
        ({"visualize": {"occlusion": {"patch": 29}}}, "visualize.occlusion.patch:"),
        ({"evaluate": {"n_samples": 0}}, "evaluate.n_samples:"),
        *LIMITS,
    ],
)
def test_bad_params_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: dict, needle: str
) -> None:
    message = str(_load_as_a_stage(tmp_path, monkeypatch, raw_params(raw)))
    assert message.startswith("params.yaml: ") and needle in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("train", "epochs"),
        ("data", "local_dir"),
        ("attacks.pgd", "steps"),
        ("models.cnn", "arch_args"),
        (None, "seed"),
    ],
)
def test_missing_key_is_an_error(section: str | None, key: str) -> None:
    """No value comes from the code: a key absent from params.yaml is a one-line error."""
    raw = raw_params()
    node = raw
    for part in section.split(".") if section else ():
        node = node[part]
    del node[key]
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


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"train:\n  epochs: [1\n", "params.yaml: malformed YAML at line"),
        (b"train:\n  epochs: 1\n  epochs: 2\n", "duplicate key 'epochs'"),
        # a comment: it would parse
        (
            b"seed: 42\n" + b"#" * (MAX_PARAMS_BYTES + 1),
            "over the 1024 KiB limit for a params file",
        ),
        (b"seed: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "params.yaml: malformed YAML"),
    ],
    ids=["malformed", "duplicate", "over-the-limit", "nested"],
)
def test_unreadable_params_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: bytes, needle: str
) -> None:
    message = str(_load_as_a_stage(tmp_path, monkeypatch, text))
    assert needle in message and "\n" not in message


def test_invalid_utf8_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    error = _load_as_a_stage(tmp_path, monkeypatch, b"seed: 42\ndevice: \xff\xfe\n")
    assert str(error) == "params.yaml: not UTF-8 text (byte 0xff at line 2)"


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


def test_forms_are_found_on_disk() -> None:
    """A form is a schema module and a package; nothing lists them."""
    from mnistlab.core.config import known_forms

    src = REPO / "src" / "mnistlab"
    packages = {p.parent.name for p in (src / "attacks").glob("*/__init__.py")} - {"common"}
    assert set(known_forms()) == packages
    assert set(load_params(REPO / "params.yaml").attacks) <= set(known_forms())


# ------------------------------------------------------------------ issue 14: more limits


@pytest.mark.parametrize(("same", "other"), [(0, 1), (1, 0)])
def test_one_transfer_image_is_enough(same: int, other: int) -> None:
    cfg = params_with({"attacks": {"noise": {"n_transfer_same": same, "n_transfer_other": other}}})
    assert cfg.attacks.noise.n_transfer_same + cfg.attacks.noise.n_transfer_other == 1


def test_the_study_needs_a_model_and_a_form() -> None:
    raw = raw_params()
    raw["models"] = {}
    with pytest.raises(ParamsError, match="models: Dictionary should have at least 1 item"):
        parse_params(raw)
    raw = raw_params()
    raw["attacks"] = {}
    with pytest.raises(ParamsError, match="attacks: Dictionary should have at least 1 item"):
        parse_params(raw)


def test_a_short_model_entry_inherits_train() -> None:
    """An entry may list only what it changes; the shipped ones list every key (null) so
    `dvc exp run -S models.<name>.<key>=...` finds it."""
    params = params_with({"models": {"mlp": {"arch": "mlp", "arch_args": {"hidden": [16]}}}})
    assert params.train_for("mlp") == params.train
    assert params.label("mlp") == "mlp"
    shipped = raw_params()["models"]
    keys = set(raw_params()["train"])
    for name, entry in shipped.items():
        assert keys <= set(entry), f"models.{name} does not list every train key"


def test_unknown_model_or_form_on_the_command_line_is_a_params_error() -> None:
    params = params_with({})
    with pytest.raises(ParamsError, match=r"--model resnet: not a model of params.yaml \(models: "):
        params.model("resnet")
    with pytest.raises(ParamsError, match=r"--form deepfool: not an attack form of params.yaml"):
        params.form("deepfool")


def test_a_stream_without_a_size_is_capped_too() -> None:
    with pytest.raises(ParamsError, match="more than 1048576 bytes, over the 1024 KiB limit"):
        load_params("/dev/zero")


def test_yaml_aliases_cannot_blow_up_the_error_message(tmp_path: Path) -> None:
    """A billion-laughs list in a wrong place: the message stays short."""
    laughs = "a0: &a0 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)
    )
    raw = yaml.safe_load(laughs)
    params = raw_params({"seed": raw["a8"]})
    start = time.perf_counter()
    with pytest.raises(ParamsError) as info:
        parse_params(params)
    assert len(str(info.value)) < 500
    # A hang guard, not a speed test (it takes milliseconds): written out, the list holds
    # 10**9 zeros, and walking them would take minutes, or all the memory.
    assert time.perf_counter() - start < 60


def test_deep_merge_merges_nested_keys_and_copies() -> None:
    base = {"train": {"lr": 0.1, "epochs": 5}, "seed": 1, "models": {"cnn": {}}}
    over = {"train": {"lr": 0.2}, "models": {"cnn": {"aug": [1]}}, "seed": {"x": 1}}
    merged = deep_merge(base, over)
    assert merged == {
        "train": {"lr": 0.2, "epochs": 5},
        "seed": {"x": 1},
        "models": {"cnn": {"aug": [1]}},
    }
    assert base == {"train": {"lr": 0.1, "epochs": 5}, "seed": 1, "models": {"cnn": {}}}
    over["models"]["cnn"]["aug"].append(2)
    assert merged["models"]["cnn"]["aug"] == [1]
