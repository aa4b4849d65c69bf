"""``attacks.strong``: The strong ensemble: PGD, APGD-CE, targeted APGD-DLR and Square,
worst case per image; minimal eps.

Loaded by name (``mnistlab.core.config.FORM_PARAMS``): ``Params`` validates the section.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mnistlab.core.params_types import EpsGrid, NonNegInt, PosInt, _Section


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
    square_queries: NonNegInt  # Square attack's queries per image after APGD (0 = off)
    square_p_init: Annotated[float, Field(gt=0, le=1)]  # fraction of pixels of its first squares
    min_eps: MinEpsParams


Params = StrongParams
