"""``attacks.class_model``: Class images grown from noise, and from a seed inside an L2 ball
(figs. 12-13).

Loaded by name (``mnistlab.core.config.FORM_PARAMS``): ``Params`` validates the section.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mnistlab.core.params_types import NonNegFloat, Pixel, PosFloat, PosInt, _Section


class SynthesisParams(_Section):
    """Class images as in Santurkar et al. 2019: from a fixed seed, inside an L2 ball."""

    # mean: the mean training digit (no class in it); class_mean: the mean training digit
    # of the class (already reads as the class); noise: N(init_mean, init_std) as above.
    init: Literal["mean", "class_mean", "noise"]
    eps_l2: PosFloat  # radius of the L2 ball around the seed, in pixel units
    steps: PosInt
    step_size: PosFloat  # L2 length of each normalised-gradient step
    # ce: the class's log-softmax (the literature's); logit: its pre-softmax logit.
    objective: Literal["ce", "logit"]


class ClassModelParams(_Section):
    steps: PosInt
    lr: PosFloat
    l2: NonNegFloat
    init_mean: Pixel
    init_std: NonNegFloat
    synthesis: SynthesisParams
    knn_k: Annotated[int, Field(gt=0, le=1000)]  # training digits that vote in the kNN judge


Params = ClassModelParams
