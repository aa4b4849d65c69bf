"""Typed, frozen, validated view of ``params.yaml``.

``load_params`` is the one way in: it rejects unknown keys, wrong types and
out-of-range values with a one-line :class:`ParamsError` naming the full key
(``train.epocks: unknown key``), before any stage computes or writes anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mnistlab.errors import ParamsError

ModelName = Literal["cnn", "cnn_bn"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
AttackForm = Literal["class_model", "targeted", "noise", "fgsm", "pgd"]
ATTACK_FORMS: tuple[str, ...] = get_args(AttackForm)
Source = Literal["mirrors", "pypi", "local"]

IMAGE_SIZE = 28  # MNIST images are 28x28; occlusion patches must fit inside.
NUM_CLASSES = 10

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Pixel = Annotated[float, Field(ge=0, le=1)]
ClassIdx = Annotated[int, Field(ge=0, lt=NUM_CLASSES)]
EpsGrid = Annotated[list[Pixel], Field(min_length=1)]


class _Section(BaseModel):
    # strict: YAML "3" is not an int and `true` is not 1; extra: typos are errors.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataParams(_Section):
    sources: Annotated[list[Source], Field(min_length=1)] = ["mirrors", "pypi"]
    local_dir: str | None = None
    timeout: PosFloat = 20.0

    @model_validator(mode="after")
    def _local_needs_dir(self) -> DataParams:
        if "local" in self.sources and not self.local_dir:
            raise ValueError("local_dir: required when sources include 'local'")
        return self


class TrainParams(_Section):
    epochs: PosInt = 4
    batch_size: PosInt = 128
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: PosFloat = 2e-3
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: NonNegFloat = 1e-4
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    val_size: PosInt = 5000
    train_limit: NonNegInt = 0  # 0 = all training images left after the validation split
    log_every: PosInt = 50
    val_every: NonNegInt = 0  # 0 = validate at the end of every epoch
    channels_last: bool = True
    augment_shift: Annotated[int, Field(ge=0, le=8)] = 0  # random translation, in pixels


class EvaluateParams(_Section):
    test_limit: NonNegInt = 0  # 0 = the whole 10k test set
    batch_size: PosInt = 1000
    n_samples: Annotated[int, Field(gt=0, le=36)] = 6
    n_misclassified: Annotated[int, Field(gt=0, le=100)] = 16


class OcclusionParams(_Section):
    n_images: Annotated[int, Field(gt=0, le=100)] = 10
    patch: Annotated[int, Field(gt=0, le=IMAGE_SIZE)] = 6
    stride: Annotated[int, Field(gt=0, le=IMAGE_SIZE)] = 1
    fill: Pixel = 0.5
    batch_size: PosInt = 1024


class VisualizeParams(_Section):
    occlusion: OcclusionParams = OcclusionParams()


class ClassModelParams(_Section):
    steps: PosInt = 100
    lr: PosFloat = 0.1
    l2: NonNegFloat = 0.0
    init_mean: Pixel = 0.5
    init_std: NonNegFloat = 0.1


class TargetedParams(_Section):
    targets: Annotated[list[ClassIdx], Field(min_length=1)] = [2, 3, 6]
    steps: PosInt = 100
    lr: PosFloat = 0.01
    beta: NonNegFloat = 0.5


class NoiseParams(_Section):
    target: ClassIdx = 3
    originals: Annotated[list[ClassIdx], Field(min_length=1)] = [4, 5]
    transfer_original: ClassIdx = 5
    n_transfer_same: NonNegInt = 6
    n_transfer_other: NonNegInt = 4
    steps: PosInt = 100
    lr: PosFloat = 0.01
    penalty: NonNegFloat = 0.2
    # logit: maximise logit_target - penalty*||N||^2 (the report's); ce: cross-entropy.
    objective: Literal["logit", "ce"] = "logit"


class FGSMParams(_Section):
    n_images: PosInt = 1000
    batch_size: PosInt = 500
    eps: EpsGrid = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]


class PGDParams(_Section):
    n_images: PosInt = 1000
    batch_size: PosInt = 500
    eps: EpsGrid = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    steps: PosInt = 40
    step_ratio: Annotated[float, Field(gt=0, le=1)] = 0.1  # step size = step_ratio * eps
    random_start: bool = True
    early_stop: bool = True


class AttackParams(_Section):
    class_model: ClassModelParams = ClassModelParams()
    targeted: TargetedParams = TargetedParams()
    noise: NoiseParams = NoiseParams()
    fgsm: FGSMParams = FGSMParams()
    pgd: PGDParams = PGDParams()


class TransferParams(_Section):
    pgd_eps: Pixel = 0.1  # PGD examples crafted at this eps on one model, scored on the other
    n_images: PosInt = 1000


class Params(_Section):
    seed: NonNegInt = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataParams = DataParams()
    train: TrainParams = TrainParams()
    # Per-model overrides of any `train` key, e.g. models.cnn_bn.lr: 0.005.
    models: dict[ModelName, dict[str, Any]] = {}
    evaluate: EvaluateParams = EvaluateParams()
    visualize: VisualizeParams = VisualizeParams()
    attacks: AttackParams = AttackParams()
    transfer: TransferParams = TransferParams()

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> Params:
        for name in self.models:
            self.train_for(name)  # raises ValidationError on a bad override
        return self

    def train_for(self, model: str) -> TrainParams:
        """The `train` section with the overrides under ``models.<model>`` applied."""
        merged = {**self.train.model_dump(), **(self.models.get(model) or {})}
        try:
            return TrainParams(**merged)
        except ValidationError as err:
            raise ValueError(_format(err, prefix=f"models.{model}")) from None


def _format(err: ValidationError, prefix: str = "") -> str:
    """Render pydantic errors as `full.key: reason`, joined on one line."""
    parts = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"] if x != "[key]"]
        key = ".".join(([prefix] if prefix else []) + loc)
        if e["type"] == "extra_forbidden":
            reason = "unknown key"
        elif e["type"] == "missing":
            reason = "missing key"
        else:
            reason = e["msg"]
            if e["type"] == "value_error":
                # Our validators raise "sub.key: reason", relative to where they sit.
                reason = reason.removeprefix("Value error, ")
                sub, _, rest = reason.partition(": ")
                if rest:
                    key, reason = (f"{key}.{sub}" if key else sub), rest
            elif "input" in e and not isinstance(e["input"], dict):
                reason = f"{reason} (got {e['input']!r})"
        parts.append(f"{key}: {reason}" if key else reason)
    return "; ".join(parts)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping.

    Raises:
        ParamsError: one line naming ``source`` and every offending key.
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params(**raw)
    except ValidationError as err:
        raise ParamsError(f"{source}: {_format(err)}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate ``params.yaml``.

    Raises:
        ParamsError: the file is missing, is not valid YAML, or holds invalid params.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ParamsError(f"{path}: cannot read params file ({err.strerror})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ParamsError(f"{path}: malformed YAML{where}: {problem}") from None
    return parse_params(raw, str(path))


def flatten(section: BaseModel | dict, prefix: str = "") -> dict[str, Any]:
    """Flatten a (nested) params section to ``{"a.b.c": value}`` for MLflow."""
    data = section.model_dump() if isinstance(section, BaseModel) else section
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out
