"""``attacks.random_noise``: random sign noise of L-inf size eps, the baseline an
adversarial attack is measured against (not in the default study; add it under
``attacks:`` to run it).

Loaded by name (``mnistlab.core.config.FORM_PARAMS``): ``Params`` validates the section.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mnistlab.core.params_types import EpsGrid, PosInt, _Section


class RandomNoiseParams(_Section):
    n_images: PosInt
    batch_size: PosInt
    eps: EpsGrid
    draws: Annotated[int, Field(gt=0, le=1000)]  # noise images per test image; worst case counts


Params = RandomNoiseParams
