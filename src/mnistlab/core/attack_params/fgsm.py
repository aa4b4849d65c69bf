"""``attacks.fgsm``: FGSM: robust accuracy against eps.

Loaded by name (``mnistlab.core.config.FORM_PARAMS``): ``Params`` validates the section.
"""

from __future__ import annotations

from mnistlab.core.params_types import EpsGrid, PosInt, _Section


class FGSMParams(_Section):
    n_images: PosInt
    batch_size: PosInt
    eps: EpsGrid


Params = FGSMParams
