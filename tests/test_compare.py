"""The ``compare`` stage's science on hand-made arrays: every number and every row of every
figure comes from its own model's arrays.

Each model's arrays hold values no other model's do, and the models are given in an
order other than the pipeline's, so a swap, or a lookup by position instead of by name,
fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from mnistlab import compare
from mnistlab.compare.figures import METHODS

MODELS = ("cnn_adv", "cnn", "cnn_bn")  # not MODEL_NAMES' order, on purpose
HI = 0.5
MIN_EPS = {  # the strong attack's smallest flipping eps per image; inf: never flipped
    "cnn": np.array([0.15, 0.05, 0.1]),  # median 0.1
    "cnn_bn": np.array([0.0625, 0.03125, 0.25, 0.5]),  # median 0.15625
    "cnn_adv": np.array([0.3, np.inf, np.inf]),  # median beyond the search ceiling
}
N_IMAGES = 2  # test images per model in the occlusion and attribution arrays


def fill(model: str, what: int, shape: tuple[int, ...]) -> np.ndarray:
    """An array of ``shape`` whose every value says which model and which ``what`` it is."""
    code = (100 * MODELS.index(model) + what + 1) / 1000
    return np.full(shape, code, dtype=np.float32)


def arrays() -> dict[str, dict[str, dict[str, np.ndarray]]]:
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {
        "strong": {},
        "class_model": {},
        "visualize": {},
        "attribution": {},
    }
    for m in MODELS:
        out["strong"][m] = {"min_eps": MIN_EPS[m]}
        out["class_model"][m] = {"images": np.stack([fill(m, k, (1, 28, 28)) for k in range(10)])}
        images = np.stack([fill(m, j, (1, 28, 28)) for j in range(N_IMAGES)])
        labels = np.array([4, 7])
        out["visualize"][m] = {
            "conv1": np.stack([fill(m, k, (1, 3, 3)) for k in range(16)]),
            "images": images,
            "labels": labels,
            "maps": np.stack([fill(m, j, (9, 9)) for j in range(N_IMAGES)]),
        }
        out["attribution"][m] = {"images": images, "labels": labels}
        for c, method in enumerate(METHODS):
            out["attribution"][m][method] = np.stack(
                [fill(m, 5 * j + c, (1, 28, 28)) for j in range(N_IMAGES)]
            )
    return out


@pytest.fixture(scope="module")
def stage_out():
    return compare.compute(arrays(), hi=HI)


def drawn(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array()).squeeze()


def test_min_eps_median_is_each_models_own(stage_out) -> None:
    assert stage_out.metrics == {
        "min_eps_median": {"cnn_adv": None, "cnn": 0.1, "cnn_bn": pytest.approx(0.15625)}
    }


def test_min_eps_cdf_draws_each_model_from_its_own_values(stage_out) -> None:
    ax = stage_out.figures["min_eps_cdf"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if line.get_label()[0] != "_"}
    assert list(lines) == ["cnn_adv (median > 0.5)", "cnn (median 0.100)", "cnn_bn (median 0.156)"]
    for label, line in lines.items():
        values = np.sort(MIN_EPS[label.split()[0]])
        finite = values[np.isfinite(values)]
        np.testing.assert_allclose(line.get_xdata(), np.r_[0, finite])
        # never-flipped images stay off the curve: it ends below 100%
        top = 100 * len(finite) / len(values)
        assert line.get_ydata()[-1] == pytest.approx(top)


def test_class_images_row_r_is_model_r_and_column_k_class_k(stage_out) -> None:
    axes = stage_out.figures["class_images"].axes
    assert len(axes) == 10 * len(MODELS)
    for r, m in enumerate(MODELS):
        assert axes[10 * r].get_ylabel() == m
        for k in range(10):
            np.testing.assert_array_equal(drawn(axes[10 * r + k]), fill(m, k, (28, 28)))


def test_conv1_filters_row_r_is_model_r(stage_out) -> None:
    axes = stage_out.figures["conv1_filters"].axes
    for r, m in enumerate(MODELS):
        assert axes[16 * r].get_ylabel() == m
        for k in range(16):
            np.testing.assert_array_equal(drawn(axes[16 * r + k]), fill(m, k, (3, 3)))


def test_occlusion_rows_are_each_models_maps_of_the_same_images(stage_out) -> None:
    axes = stage_out.figures["occlusion"].axes
    n = N_IMAGES
    for j in range(n):  # the top row: the images, from the first model's arrays
        np.testing.assert_array_equal(drawn(axes[j]), fill(MODELS[0], j, (28, 28)))
    for r, m in enumerate(MODELS, start=1):
        assert axes[n * r].get_ylabel() == m
        for j in range(n):
            np.testing.assert_array_equal(drawn(axes[n * r + j]), fill(m, j, (9, 9)))


def test_attribution_rows_are_model_by_image_and_columns_the_methods(stage_out) -> None:
    axes = stage_out.figures["attribution"].axes
    cols = len(METHODS) + 1
    for i, m in enumerate(MODELS):
        for j in range(N_IMAGES):
            row = axes[(i * N_IMAGES + j) * cols : (i * N_IMAGES + j + 1) * cols]
            assert row[0].get_ylabel().splitlines()[0] == m
            np.testing.assert_array_equal(drawn(row[0]), fill(m, j, (28, 28)))
            for c, method in enumerate(METHODS, start=1):
                np.testing.assert_array_equal(drawn(row[c]), fill(m, 5 * j + c - 1, (28, 28)))
                if i == j == 0:
                    assert row[c].get_title() == method.replace("_", " ")
