"""``attacks.noise``: Learned additive noise towards a target class, and how it transfers
(figs. 17-20).

Loaded by name (``mnistlab.core.config.FORM_PARAMS``): ``Params`` validates the section.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from mnistlab.core.params_types import ClassIdx, NonNegFloat, NonNegInt, PosFloat, PosInt, _Section


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


Params = NoiseParams
