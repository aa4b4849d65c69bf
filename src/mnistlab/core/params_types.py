"""The building blocks of the params models: names, sizes, bounded numbers, the base.

Every section of ``params.yaml`` is a :class:`_Section`; its fields use the bounded
types below, so no number can be infinite or absurdly large.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# A model or attack-form name: it becomes part of stage names (`attack@<form>-<model>`)
# and file names, so letters, digits and underscores only.
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
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


class _Section(BaseModel):
    # strict: YAML "3" is not an int and `true` is not 1; extra: typos are errors.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
