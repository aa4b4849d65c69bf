"""The params sections of the stages that study a trained model (``evaluate``,
``visualize``, ``attribution``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mnistlab.core.params_types import IMAGE_SIZE, NonNegInt, Pixel, PosInt, _Section


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


class AttributionParams(_Section):
    n_images: Annotated[int, Field(gt=0, le=100)]  # the visualize stage's occlusion images
    ig_steps: Annotated[int, Field(gt=0, le=1000)]  # Integrated Gradients path steps
    occlusion: AttributionOcclusionParams
    deletion_steps: Annotated[int, Field(gt=0, le=784)]  # points on each deletion curve
    deletion_fill: Pixel  # value of a deleted pixel (0 = black background)
    sanity_threshold: Annotated[float, Field(gt=0, le=1)]  # max Spearman after randomisation
