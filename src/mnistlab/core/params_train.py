"""The params sections of the download and train stages (``data``, ``train``) and a
model's entry (``models.<name>``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

from mnistlab.core.params_types import (
    NonNegFloat,
    NonNegInt,
    Pixel,
    PosFloat,
    PosInt,
    Source,
    _Section,
)


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

    # PGD or FGSM with a random start, or TRADES (clean CE + beta * KL to the crafted point)
    method: Literal["pgd", "fgsm_rs", "trades"]
    eps: Pixel  # the radius trained for (pixels in [0, 1])
    steps: Annotated[int, Field(gt=0, le=100)]  # PGD steps per batch (fgsm_rs: 1)
    step_ratio: Annotated[float, Field(gt=0, le=2.5)]  # step size = step_ratio * eps
    # eps grows linearly from 0 over the first ramp_epochs epochs
    ramp_epochs: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]
    beta: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]  # TRADES' KL weight
    check_images: PosInt  # held-out images scored under APGD-CE after every epoch
    check_steps: Annotated[int, Field(gt=0, le=1000)]  # APGD-CE iterations of that check


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


class _ModelEntry(_Section):
    """What a model is: its architecture, with every keyword argument, and a label."""

    label: str | None = None  # its name in the report and README tables (None: the name)
    arch: str  # a module of mnistlab.core.archs
    arch_args: dict[str, Any]  # the architecture's keyword arguments, every one spelled

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        # A file listing, not an import: params load without torch. The keywords and the
        # output shape are checked by building the model (the validate_params stage).
        from mnistlab.core import archs

        if arch not in archs.known():
            raise ValueError(
                f"unknown architecture {arch!r} (known are {', '.join(archs.known())})"
            )
        return arch


# A model entry: the above, and any `train` key as an override (null: train's value).
# Every key of TrainParams is a field here, so a typo is an unknown key and `dvc exp run
# -S models.<name>.<key>=...` finds each key that params.yaml lists.
ModelSpec = create_model(
    "ModelSpec", __base__=_ModelEntry, **{key: (Any, None) for key in TrainParams.model_fields}
)


def train_overrides(spec: BaseModel) -> dict[str, Any]:
    """The `train` keys a model entry sets (not null)."""
    return {k: getattr(spec, k) for k in TrainParams.model_fields if getattr(spec, k) is not None}
