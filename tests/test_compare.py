"""The ``compare`` stage's science on hand-made arrays: every number and every row of every
figure comes from its own model's arrays.

Each model's arrays hold values no other model's do, and the models are given in an
order other than their names' sort order, so a swap, or a lookup by position instead of by
name, fails. A study grows: more models, a model without conv layers (an MLP: no conv1
filters, no Grad-CAM), a new attack form, and forms left out.
"""

from __future__ import annotations

import numpy as np
import pytest

from mnistlab import compare
from mnistlab.compare.figures import METHODS

MODELS = ("robust", "plain", "bn")  # not sorted, on purpose
HI = 0.5
MIN_EPS = {  # the strong attack's smallest flipping eps per image; inf: never flipped
    "plain": np.array([0.15, 0.05, 0.1]),  # median 0.1
    "bn": np.array([0.0625, 0.03125, 0.25, 0.5]),  # median 0.15625
    "robust": np.array([0.3, np.inf, np.inf]),  # median beyond the search ceiling
    "mlp": np.array([0.02, 0.04, 0.06]),  # median 0.04
}
N_IMAGES = 2  # test images per model in the occlusion and attribution arrays


ALL = (*MODELS, "mlp")


def fill(model: str, what: int, shape: tuple[int, ...]) -> np.ndarray:
    """An array of ``shape`` whose every value says which model and which ``what`` it is."""
    code = (100 * ALL.index(model) + what + 1) / 1000
    return np.full(shape, code, dtype=np.float32)


def arrays(models=MODELS) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {
        "strong": {},
        "class_model": {},
        "visualize": {},
        "attribution": {},
    }
    for m in models:
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
    if "mlp" in models:  # no conv layer: no conv1 filters, no Grad-CAM map
        del out["visualize"]["mlp"]["conv1"], out["attribution"]["mlp"]["grad_cam"]
    return out


def attack_metrics(models=MODELS) -> dict[str, dict[str, dict]]:
    """Two forms' metrics JSONs: numbers to compare, and what is not a number to compare."""
    return {
        "strong": {
            m: {"n_images": 100, "clean_accuracy": 0.9 + i / 100, "robust_accuracy": {"0.3": 0.5}}
            for i, m in enumerate(models)
        },
        "blur": {  # a new form: a scalar, a bool and a list (left out), a null (left out)
            m: {"success_rate": i / 10, "flag": True, "per_class": [1, 2], "median": None}
            for i, m in enumerate(models)
        },
    }


@pytest.fixture(scope="module")
def stage_out():
    return compare.compute(arrays(), models=MODELS, hi=HI, attack_metrics=attack_metrics())


def drawn(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array()).squeeze()


def test_min_eps_median_is_each_models_own(stage_out) -> None:
    assert stage_out.metrics["min_eps_median"] == {
        "robust": None,
        "plain": 0.1,
        "bn": pytest.approx(0.15625),
    }
    assert "not_applicable" not in stage_out.metrics  # everything applies


def test_min_eps_cdf_draws_each_model_from_its_own_values(stage_out) -> None:
    ax = stage_out.figures["min_eps_cdf"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if line.get_label()[0] != "_"}
    assert list(lines) == ["robust (median > 0.5)", "plain (median 0.100)", "bn (median 0.156)"]
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


# --------------------------------------------------------------- every form, any model


def test_every_form_gets_a_table_of_each_models_numbers(stage_out) -> None:
    """Every number, nested sections as dotted keys; no list, bool or null."""
    forms = stage_out.metrics["forms"]
    assert list(forms) == ["strong", "blur"]
    assert forms["blur"] == {
        "robust": {"success_rate": 0.0},
        "plain": {"success_rate": 0.1},
        "bn": {"success_rate": 0.2},
    }
    assert forms["strong"]["bn"] == {
        "n_images": 100,
        "clean_accuracy": pytest.approx(0.92),
        "robust_accuracy.0.3": 0.5,
    }
    assert list(forms["strong"]) == list(MODELS)


def test_every_form_gets_a_table_figure(stage_out) -> None:
    fig = stage_out.figures["form_blur"]
    table = fig.axes[0].tables[0]
    cells = {(r, c): cell.get_text().get_text() for (r, c), cell in table.get_celld().items()}
    # a row per metric that differs between the models, a column per model, in order
    assert [cells[0, c] for c in range(3)] == list(MODELS)  # the header row
    assert cells[1, -1] == "success_rate"  # the row label
    assert [cells[1, c] for c in range(3)] == ["0", "0.1", "0.2"]
    assert set(stage_out.figures) == {
        "min_eps_cdf",
        "class_images",
        "conv1_filters",
        "occlusion",
        "attribution",
        "form_strong",
        "form_blur",
    }


@pytest.fixture(scope="module")
def mlp_out():
    """Four models, one an MLP; the study runs neither the strong nor the class_model form."""
    models = (*MODELS, "mlp")
    a = arrays(models)
    del a["strong"], a["class_model"]
    return compare.compute(
        a, models=models, attack_metrics={"blur": attack_metrics(models)["blur"]}
    )


def test_a_model_without_conv1_gets_a_not_applicable_row(mlp_out) -> None:
    fig = mlp_out.figures["conv1_filters"]
    axes = fig.axes
    for r, m in enumerate(MODELS):  # the CNNs' rows are drawn as before
        assert axes[16 * r].get_ylabel() == m
        np.testing.assert_array_equal(drawn(axes[16 * r]), fill(m, 0, (3, 3)))
    mlp_row = axes[16 * 3 : 16 * 4]
    assert not any(ax.images for ax in mlp_row)
    assert mlp_row[0].get_ylabel() == "mlp"
    assert any("not applicable" in t.get_text() for ax in mlp_row for t in ax.texts)
    na = mlp_out.metrics["not_applicable"]
    assert "conv1" in na["conv1_filters/mlp"] and "grad_cam" in na["attribution/mlp"]


def test_a_model_without_grad_cam_gets_a_not_applicable_panel(mlp_out) -> None:
    axes = mlp_out.figures["attribution"].axes
    cols = len(METHODS) + 1
    n = max(1, min(4, N_IMAGES, 12 // 4))  # images per model: as many as fit 12 rows
    first_mlp_row = axes[3 * n * cols : (3 * n + 1) * cols]
    assert first_mlp_row[0].get_ylabel().splitlines()[0] == "mlp"
    gc = first_mlp_row[1 + METHODS.index("grad_cam")]
    assert not gc.images and any("not applicable" in t.get_text() for t in gc.texts)
    saliency = first_mlp_row[1 + METHODS.index("saliency")]
    np.testing.assert_array_equal(drawn(saliency), fill("mlp", 0, (28, 28)))


def test_forms_left_out_skip_their_figures_and_say_so(mlp_out) -> None:
    na = mlp_out.metrics["not_applicable"]
    assert "strong" in na["min_eps_cdf"] and "class_model" in na["class_images"]
    assert "min_eps_median" not in mlp_out.metrics
    assert set(mlp_out.figures) == {"conv1_filters", "occlusion", "attribution", "form_blur"}
    assert list(mlp_out.metrics["forms"]["blur"]) == [*MODELS, "mlp"]


def test_attribution_rows_shrink_as_models_are_added() -> None:
    """Six models of four images each would be 24 rows: at most 12, at least one each."""
    many = {f"m{i}": arrays()["attribution"]["plain"] for i in range(6)}
    many = {
        m: {**a, "images": np.repeat(a["images"], 2, 0), "labels": np.arange(4)}
        for m, a in many.items()
    }
    from mnistlab.compare import figures

    fig = figures.attribution(many)
    assert len(fig.axes) == 12 * (len(METHODS) + 1)
