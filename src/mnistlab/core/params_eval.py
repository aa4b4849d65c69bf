"""The params sections of the stages that study a trained model (``evaluate``,
``visualize``, ``attribution``) and of ``transfer``."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from mnistlab.core.params_types import IMAGE_SIZE, NonNegInt, Pixel, PosInt, _Section

# What a deleted pixel becomes in the deletion/insertion curves: ``black`` = 0 (MNIST's
# background; rewards methods that follow the input), ``blur`` = the pixel of a Gaussian-
# blurred copy of the image (stays near the data; the fill the trusted method is named by).
DeletionFill = Literal["black", "blur"]
DELETION_FILLS: tuple[str, ...] = get_args(DeletionFill)
TRUSTED_FILL: DeletionFill = "blur"


class EvaluateParams(_Section):
    test_limit: NonNegInt  # 0 = the whole 10k test set
    batch_size: PosInt
    n_samples: Annotated[int, Field(gt=0, le=36)]
    n_misclassified: Annotated[int, Field(gt=0, le=100)]


class OcclusionParams(_Section):
    n_images: Annotated[int, Field(gt=0, le=100)]
    patch: Annotated[int, Field(gt=0, le=IMAGE_SIZE)]
    stride: Annotated[int, Field(gt=0, le=IMAGE_SIZE)]
    fill: Pixel
    batch_size: PosInt


class VisualizeParams(_Section):
    occlusion: OcclusionParams


class AttributionOcclusionParams(_Section):
    patch: Annotated[int, Field(gt=0, le=IMAGE_SIZE)]
    stride: Annotated[int, Field(gt=0, le=IMAGE_SIZE)]
    fill: Pixel


class SmoothGradParams(_Section):
    samples: Annotated[int, Field(gt=0, le=1000)]  # noisy copies averaged per image
    noise: Annotated[float, Field(gt=0, le=1)]  # Gaussian std, in pixel units ([0, 1] range)


class AttributionParams(_Section):
    n_images: Annotated[int, Field(gt=0, le=100)]  # the visualize stage's occlusion images
    ig_steps: Annotated[int, Field(gt=0, le=1000)]  # Integrated Gradients path steps
    ig_noise_samples: Annotated[int, Field(gt=0, le=100)]  # uniform-noise baselines averaged
    smoothgrad: SmoothGradParams
    # Gaussian std (pixels) of the blur fill and the IG blur baseline; beyond the image
    # side every pixel is already mixed with every other.
    blur_sigma: Annotated[float, Field(gt=0, le=IMAGE_SIZE)]
    occlusion: AttributionOcclusionParams
    deletion_steps: Annotated[int, Field(gt=0, le=784)]  # points on each deletion curve
    deletion_fills: Annotated[list[DeletionFill], Field(min_length=1)]
    sanity_threshold: Annotated[float, Field(gt=0, le=1)]  # max Spearman after randomisation

    @model_validator(mode="after")
    def _fills_unique_with_trusted(self) -> AttributionParams:
        if len(set(self.deletion_fills)) != len(self.deletion_fills):
            raise ValueError(f"deletion_fills: each fill once, got {self.deletion_fills}")
        # The trusted method is named by its deletion AUC under this fill.
        if TRUSTED_FILL not in self.deletion_fills:
            raise ValueError(
                f"deletion_fills: must include {TRUSTED_FILL!r} (names the trusted method)"
            )
        return self


class TransferParams(_Section):
    pgd_eps: Pixel  # PGD examples crafted at this eps on one model, scored on the other
    n_images: PosInt
