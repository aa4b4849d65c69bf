"""``attacks.strong``: The strong ensemble: PGD, APGD-CE, targeted APGD-DLR and Square,
worst case per image; minimal eps.

Loaded by name (``mnistlab.core.config.FORM_PARAMS``): ``Params`` validates the section.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from mnistlab.core.params_types import EpsGrid, NonNegInt, Pixel, PosInt, _Section


class MinEpsParams(_Section):
    n_images: PosInt  # seeded test images whose smallest flipping eps is searched
    hi: Annotated[float, Field(gt=0, le=1)]  # search ceiling; images robust there count as inf
    tol: Annotated[float, Field(gt=0, le=0.1)]  # bisection stops at this width


class StandardParams(_Section):
    """AutoAttack's standard budget, run on what the cheaper ensemble left (see ``worst_case``)."""

    eps: Annotated[list[Pixel], Field(max_length=16)]  # where it runs ([] = nowhere)
    n_targets: Annotated[int, Field(ge=0, le=9)]  # APGD-T target classes in all (AutoAttack: 9)
    square_queries: NonNegInt  # a fresh Square run's queries (AutoAttack: 5000)


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
    standard: StandardParams
    min_eps: MinEpsParams

    @model_validator(mode="after")
    def _standard_within(self) -> StrongParams:
        # The standard budget continues the cheaper one at the same eps: it needs its rows.
        missing = [e for e in self.standard.eps if e not in self.eps]
        if missing:
            raise ValueError(
                f"standard.eps: {', '.join(f'{e:g}' for e in missing)} not in eps "
                f"({', '.join(f'{e:g}' for e in self.eps)})"
            )
        return self


Params = StrongParams
