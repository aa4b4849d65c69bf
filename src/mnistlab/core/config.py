"""Typed, frozen, validated view of ``params.yaml``.

``params.yaml`` is the one place a default lives: every key is required here, so a
value can never silently come from the code instead of the file.

``load_params`` is the one way in: it rejects unknown keys, wrong types and
out-of-range values with a one-line :class:`ParamsError` naming the full key
(``train.epocks: unknown key``), before any stage computes or writes anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mnistlab.core.errors import ParamsError

ModelName = Literal["cnn", "cnn_bn", "cnn_adv"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
AttackForm = Literal["class_model", "targeted", "noise", "fgsm", "pgd", "strong"]
ATTACK_FORMS: tuple[str, ...] = get_args(AttackForm)
Source = Literal["mirrors", "pypi", "local"]

IMAGE_SIZE = 28  # MNIST images are 28x28; occlusion patches must fit inside.
NUM_CLASSES = 10

# Every number has a sane ceiling and every float is finite: `.inf` or 10**30 epochs
# would otherwise pass validation and fail (or run forever) inside a stage.
MAX_COUNT = 10_000_000
PosInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
PosFloat = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]
Pixel = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
ClassIdx = Annotated[int, Field(ge=0, lt=NUM_CLASSES)]
EpsGrid = Annotated[list[Pixel], Field(min_length=1)]
# params.yaml is a few KB; a file over 1 MiB is a mistake (or an attack on the parser).
MAX_PARAMS_BYTES = 1 << 20


class _Section(BaseModel):
    # strict: YAML "3" is not an int and `true` is not 1; extra: typos are errors.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataParams(_Section):
    sources: Annotated[list[Source], Field(min_length=1)]
    local_dir: str | None
    timeout: PosFloat

    @model_validator(mode="after")
    def _local_needs_dir(self) -> DataParams:
        if "local" in self.sources and not self.local_dir:
            raise ValueError("local_dir: required when sources include 'local'")
        return self


class AdversarialParams(_Section):
    """Adversarial training against L-inf perturbations (Madry et al. 2018; Wong et al. 2020)."""

    method: Literal["pgd", "fgsm_rs"]  # PGD with random start, or FGSM with random start
    eps: Pixel  # the radius trained for (pixels in [0, 1])
    steps: Annotated[int, Field(gt=0, le=100)]  # PGD steps per batch (fgsm_rs: 1)
    step_ratio: Annotated[float, Field(gt=0, le=2.5)]  # step size = step_ratio * eps
    # eps grows linearly from 0 over the first ramp_epochs epochs
    ramp_epochs: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]
    check_images: PosInt  # held-out images scored under PGD after every epoch
    check_steps: Annotated[int, Field(gt=0, le=1000)]  # PGD steps of that check


class TrainParams(_Section):
    epochs: Annotated[int, Field(gt=0, le=1000)]
    batch_size: PosInt
    optimizer: Literal["adamw", "sgd"]
    lr: PosFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: NonNegFloat
    schedule: Literal["onecycle", "cosine", "constant"]
    val_size: Annotated[int, Field(gt=0, lt=60_000)]  # MNIST has 60k training images
    train_limit: NonNegInt  # 0 = all training images left after the validation split
    log_every: PosInt
    val_every: NonNegInt  # 0 = validate at the end of every epoch
    channels_last: bool
    augment_shift: Annotated[int, Field(ge=0, le=8)]  # random translation, in pixels
    adversarial: AdversarialParams | None  # null: natural training


class EvaluateParams(_Section):
    test_limit: NonNegInt  # 0 = the whole 10k test set
    batch_size: PosInt
    n_samples: Annotated[int, Field(gt=0, le=36)]
    n_misclassified: Annotated[int, Field(gt=0, le=100)]


class OcclusionParams(_Section):
    n_images: Annotated[int, Field(gt=0, le=100)]
    patch: Annotated[int, Field(gt=0, le=IMAGE_SIZE)]
    stride: Annotated[int, Field(gt=0, le=IMAGE_SIZE)]
    fill: Pixel
    batch_size: PosInt


class VisualizeParams(_Section):
    occlusion: OcclusionParams


class AttributionOcclusionParams(_Section):
    patch: Annotated[int, Field(gt=0, le=IMAGE_SIZE)]
    stride: Annotated[int, Field(gt=0, le=IMAGE_SIZE)]
    fill: Pixel


class AttributionParams(_Section):
    n_images: Annotated[int, Field(gt=0, le=100)]  # the visualize stage's occlusion images
    ig_steps: Annotated[int, Field(gt=0, le=1000)]  # Integrated Gradients path steps
    occlusion: AttributionOcclusionParams
    deletion_steps: Annotated[int, Field(gt=0, le=784)]  # points on each deletion curve
    deletion_fill: Pixel  # value of a deleted pixel (0 = black background)
    sanity_threshold: Annotated[float, Field(gt=0, le=1)]  # max Spearman after randomisation


class ClassModelParams(_Section):
    steps: PosInt
    lr: PosFloat
    l2: NonNegFloat
    init_mean: Pixel
    init_std: NonNegFloat


class TargetedParams(_Section):
    targets: Annotated[list[ClassIdx], Field(min_length=1)]
    steps: PosInt
    lr: PosFloat
    beta: NonNegFloat


class NoiseParams(_Section):
    target: ClassIdx
    originals: Annotated[list[ClassIdx], Field(min_length=1)]
    transfer_original: ClassIdx
    n_transfer_same: NonNegInt
    n_transfer_other: NonNegInt
    steps: PosInt
    lr: PosFloat
    penalty: NonNegFloat
    # logit: maximise logit_target - penalty*||N||^2 (the report's); ce: cross-entropy.
    objective: Literal["logit", "ce"]

    @model_validator(mode="after")
    def _some_transfer_image(self) -> NoiseParams:
        # The transfer test (and its figure) needs at least one image to apply noise to.
        if self.n_transfer_same + self.n_transfer_other == 0:
            raise ValueError(
                "n_transfer_same: n_transfer_same + n_transfer_other must be at least 1"
            )
        return self


class FGSMParams(_Section):
    n_images: PosInt
    batch_size: PosInt
    eps: EpsGrid


class PGDParams(_Section):
    n_images: PosInt
    batch_size: PosInt
    eps: EpsGrid
    steps: PosInt
    step_ratio: Annotated[float, Field(gt=0, le=1)]  # step size = step_ratio * eps
    random_start: bool
    early_stop: bool


class MinEpsParams(_Section):
    n_images: PosInt  # seeded test images whose smallest flipping eps is searched
    hi: Annotated[float, Field(gt=0, le=1)]  # search ceiling; images robust there count as inf
    tol: Annotated[float, Field(gt=0, le=0.1)]  # bisection stops at this width


class StrongParams(_Section):
    n_images: PosInt
    batch_size: PosInt
    eps: EpsGrid
    pgd_steps: PosInt  # the PGD member of the ensemble (the `pgd` form's attack)
    pgd_step_ratio: Annotated[float, Field(gt=0, le=1)]
    n_iter: PosInt  # APGD iterations per run
    n_restarts: PosInt  # APGD-CE restarts
    n_targets: Annotated[int, Field(ge=0, le=9)]  # APGD-DLR target classes per image
    min_eps: MinEpsParams


class AttackParams(_Section):
    class_model: ClassModelParams
    targeted: TargetedParams
    noise: NoiseParams
    fgsm: FGSMParams
    pgd: PGDParams
    strong: StrongParams


class TransferParams(_Section):
    pgd_eps: Pixel  # PGD examples crafted at this eps on one model, scored on the other
    n_images: PosInt


class Params(_Section):
    seed: Annotated[int, Field(ge=0, lt=2**32)]  # numpy seeds take 32 bits
    device: Literal["auto", "cpu", "cuda"]
    # torch threads per process: "auto" = the cores this process may use / DVC queue workers
    threads: Literal["auto"] | Annotated[int, Field(gt=0, le=1024)]
    data: DataParams
    train: TrainParams
    # Per-model overrides of any `train` key, e.g. models.cnn_bn.lr: 0.005.
    models: dict[ModelName, dict[str, Any]]
    evaluate: EvaluateParams
    visualize: VisualizeParams
    attribution: AttributionParams
    attacks: AttackParams
    transfer: TransferParams

    @field_validator("threads", mode="before")
    @classmethod
    def _threads_auto_or_count(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and 0 < value <= 1024):
            return value
        raise ValueError(f"must be 'auto' or a number of threads from 1 to 1024 (got {value!r})")

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> Params:
        # dvc.yaml's train@<model> stages depend on the param `models.<model>`: DVC
        # cannot run one whose entry is missing, so every model needs one ({} = none).
        missing = [name for name in MODEL_NAMES if name not in self.models]
        if missing:
            raise ValueError(
                f"models: missing an entry for {', '.join(missing)} "
                "(every model needs one; {} for no overrides)"
            )
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


def _short_repr(value: Any) -> str:
    """A bounded repr: YAML aliases can make a small file hold an astronomically big list."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict = 2, 6, 6
    short.maxstring = short.maxother = short.maxlong = 60
    return short.repr(value)


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
                reason = f"{reason} (got {_short_repr(e['input'])})"
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


def read_params_text(path: str | Path, max_bytes: int = MAX_PARAMS_BYTES) -> str:
    """The text of a params file: at most ``max_bytes``, UTF-8, checked before parsing.

    Raises:
        ParamsError: the file is missing or unreadable, larger than ``max_bytes``
            (checked before reading it whole), or not UTF-8.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise ParamsError(_too_big(path, max_bytes, f"{size} bytes"))
            data = f.read(max_bytes + 1)  # a pipe or /proc file may say size 0
    except OSError as err:
        raise ParamsError(f"{path}: cannot read params file ({err.strerror})") from None
    if len(data) > max_bytes:
        raise ParamsError(_too_big(path, max_bytes, f"more than {max_bytes} bytes"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ParamsError(
            f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at line {line})"
        ) from None


def _too_big(path: Path, max_bytes: int, size: str) -> str:
    return f"{path}: {size}, over the {max_bytes // 1024} KiB limit for a params file"


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate ``params.yaml``.

    Raises:
        ParamsError: the file is missing, too large, not UTF-8, not valid YAML, or
            holds invalid params.
    """
    path = Path(path)
    text = read_params_text(path)
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except RecursionError:
        raise ParamsError(f"{path}: malformed YAML: nested too deeply") from None
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
