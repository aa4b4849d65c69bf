"""The params sections of the download and train stages (``data``, ``train``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

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
