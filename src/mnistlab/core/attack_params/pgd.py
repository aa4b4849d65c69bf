"""``attacks.pgd``: PGD (Madry et al. 2018): robust accuracy against eps.

Loaded by name (``mnistlab.core.config.FORM_PARAMS``): ``Params`` validates the section.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mnistlab.core.params_types import EpsGrid, PosInt, _Section


class PGDParams(_Section):
    n_images: PosInt
    batch_size: PosInt
    eps: EpsGrid
    steps: PosInt
    step_ratio: Annotated[float, Field(gt=0, le=1)]  # step size = step_ratio * eps
    random_start: bool
    early_stop: bool


Params = PGDParams
