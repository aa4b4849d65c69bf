"""``attacks.targeted``: One test image per class pushed to each target class (figs. 14-16).

Loaded by name (``mnistlab.core.config.FORM_PARAMS``): ``Params`` validates the section.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mnistlab.core.params_types import ClassIdx, NonNegFloat, PosFloat, PosInt, _Section


class TargetedParams(_Section):
    targets: Annotated[list[ClassIdx], Field(min_length=1)]
    steps: PosInt
    lr: PosFloat
    beta: NonNegFloat


Params = TargetedParams
