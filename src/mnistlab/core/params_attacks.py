"""The params sections of the attack stages (``attacks``) and of ``transfer``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from mnistlab.core.params_types import (
    ClassIdx,
    EpsGrid,
    NonNegFloat,
    NonNegInt,
    Pixel,
    PosFloat,
    PosInt,
    _Section,
)


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


class TargetedParams(_Section):
    targets: Annotated[list[ClassIdx], Field(min_length=1)]
    steps: PosInt
    lr: PosFloat
    beta: NonNegFloat


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


class FGSMParams(_Section):
    n_images: PosInt
    batch_size: PosInt
    eps: EpsGrid


class PGDParams(_Section):
    n_images: PosInt
    batch_size: PosInt
    eps: EpsGrid
    steps: PosInt
    step_ratio: Annotated[float, Field(gt=0, le=1)]  # step size = step_ratio * eps
    random_start: bool
    early_stop: bool


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


class AttackParams(_Section):
    class_model: ClassModelParams
    targeted: TargetedParams
    noise: NoiseParams
    fgsm: FGSMParams
    pgd: PGDParams
    strong: StrongParams


class TransferParams(_Section):
    pgd_eps: Pixel  # PGD examples crafted at this eps on one model, scored on the other
    n_images: PosInt
