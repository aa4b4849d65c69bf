"""The ``transfer`` stage's science on hand-made models: rows are the model an attack was
crafted on, columns the model it is scored on.

Each model here reads its class off one row of pixels (``cnn`` row 0, ``cnn_bn`` row 1,
``cnn_adv`` row 2), so an image can say a different class to each model and every cell
of every matrix is known in advance. The matrices are asymmetric: a transposed one
(sources and targets swapped anywhere along the way) fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers.params import params_with
from mnistlab import transfer

MODELS = ("cnn", "cnn_bn", "cnn_adv")
ROW = {m: i for i, m in enumerate(MODELS)}  # the pixel row each model reads


class RowReader(nn.Module):
    """Logits are pixels ``[row, 0:10]``: the class is the brightest of those ten."""

    def __init__(self, row: int) -> None:
        super().__init__()
        self.row = row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * x[:, 0, self.row, :10]


def models() -> dict[str, nn.Module]:
    return {m: RowReader(ROW[m]) for m in MODELS}


def image(reads: dict[str, int], *, on: float = 0.9, off: float = 0.1) -> np.ndarray:
    """One ``(1, 28, 28)`` image that each model ``m`` classifies as ``reads[m]``."""
    img = np.zeros((1, 28, 28), dtype=np.float32)
    for m, cls in reads.items():
        img[0, ROW[m], :10] = off
        img[0, ROW[m], cls] = on
    return img


def everyone(cls: int) -> dict[str, int]:
    return dict.fromkeys(MODELS, cls)


def targeted_arrays(fooled: dict[str, int]) -> dict[str, np.ndarray]:
    """Targeted examples for targets (3, 7) x originals (labels 3, 5, 1, 8): the 7 eligible
    pairs (original != target) fool the models in ``fooled`` on its count of them, the rest
    keep the original class. The pair target 3, original 3 reads 3 to every model and
    must not count: a success on it would turn every 0 into 1/8."""
    targets, originals = np.array([3, 7]), np.array([3, 5, 1, 8])
    images = np.zeros((2, 4, 1, 28, 28), dtype=np.float32)
    eligible = 0
    for t, target in enumerate(targets):
        for n, orig in enumerate(originals):
            if orig == target:
                images[t, n] = image(everyone(int(target)))
                continue
            reads = {m: int(target) if eligible < k else int(orig) for m, k in fooled.items()}
            images[t, n] = image({**everyone(int(orig)), **reads})
            eligible += 1
    return {"images": images, "targets": targets, "original_labels": originals}


def class_images(read_by: dict[str, int]) -> np.ndarray:
    """Images made for classes 0-9: model ``m`` reads the first ``read_by[m]`` of them as
    intended and the rest as the next class."""
    reads = [{m: k if k < read_by.get(m, 0) else (k + 1) % 10 for m in MODELS} for k in range(10)]
    return np.stack([image(r) for r in reads])


def knn_votes(n_right: int) -> np.ndarray:
    """kNN votes for images 0-9: the first ``n_right`` the intended class, the rest the next."""
    return np.array([k if k < n_right else (k + 1) % 10 for k in range(10)])


def class_model_arrays(
    read_by: dict[str, int], seeded_by: dict[str, int] | None = None, source: str = "cnn"
) -> dict[str, np.ndarray]:
    """What a class_model stage saves: images grown from noise (read as ``read_by``),
    images from a seed (read as ``seeded_by``), and the training-digit judges of both
    and of the seed, with values that say which ``source`` model they belong to."""
    r = ROW[source]
    return {
        "images": class_images(read_by),
        "knn_class": knn_votes(KNN_FROM_NOISE[source]),
        "nearest_l2": np.arange(10, dtype=np.float32) + 10 * r,  # mean 4.5 + 10 r
        "seeded_images": class_images(seeded_by or {}),
        "seeded_knn_class": knn_votes(KNN_SEEDED[source]),
        "seeded_nearest_l2": np.full(10, 1.0 + r, dtype=np.float32),
        "seeds": np.full((10, 1, 28, 28), 0.1 * (r + 1), dtype=np.float32),
        "seed_knn_class": knn_votes(1),
        "seed_nearest_l2": np.full(10, 7.0, dtype=np.float32),
    }


def noise_arrays(fooled: dict[str, int]) -> dict[str, np.ndarray]:
    """Learned-noise examples from class 2 to targets 0, 1, 4, 6 (and 2 -> 2, which every
    model reads as 2 and must not count): model ``m`` is fooled on ``fooled[m]`` of four."""
    sources, targets = np.array([2, 2, 2, 2, 2]), np.array([2, 0, 1, 4, 6])
    images = [image(everyone(2))]
    for i, target in enumerate(targets[1:]):
        reads = {m: int(target) if i < k else 2 for m, k in fooled.items()}
        images.append(image({**everyone(2), **reads}))
    return {"images": np.stack(images), "sources": sources, "targets": targets}


# Expected matrices, rows: crafted on, columns: scored on (cnn, cnn_bn, cnn_adv).
TARGETED = {  # on cnn: fools itself and 3 of 7 on cnn_adv; on cnn_adv: fails even white-box
    "cnn": {"cnn": 7, "cnn_adv": 3},
    "cnn_bn": {"cnn_bn": 7},
    "cnn_adv": {},
}
CLASS_MODEL = {  # the robust model's class images are read as intended by every model
    "cnn": {"cnn": 10},
    "cnn_bn": {"cnn_bn": 10, "cnn": 5},
    "cnn_adv": {"cnn": 10, "cnn_bn": 10, "cnn_adv": 10},
}
NOISE = {"cnn": {"cnn": 4, "cnn_bn": 1}, "cnn_bn": {"cnn_bn": 4}, "cnn_adv": {"cnn_adv": 2}}
SEEDED = {  # the seeded class images: cnn_adv's are read as intended by the other two
    "cnn": {"cnn": 10, "cnn_bn": 2},
    "cnn_bn": {"cnn_bn": 10, "cnn_adv": 1},
    "cnn_adv": {"cnn": 9, "cnn_bn": 8, "cnn_adv": 10},
}
KNN_SEEDED = {"cnn": 1, "cnn_bn": 3, "cnn_adv": 9}  # seeded images whose kNN vote is right
KNN_FROM_NOISE = {"cnn": 2, "cnn_bn": 0, "cnn_adv": 4}


def matrix(counts: dict[str, dict[str, int]], total: int) -> list[list[float]]:
    return [[counts[src].get(dst, 0) / total for dst in MODELS] for src in MODELS]


def test_matrix_helpers_are_not_symmetric() -> None:
    """The cases below would not catch a transposition if they were symmetric."""
    for counts, total in ((TARGETED, 7), (CLASS_MODEL, 10), (NOISE, 4), (SEEDED, 10)):
        mat = np.array(matrix(counts, total))
        assert not np.allclose(mat, mat.T)


def test_targeted_success_counts_only_pairs_whose_target_is_not_the_original() -> None:
    arrays = targeted_arrays({"cnn_bn": 3})
    m = models()
    assert transfer.targeted_success(m["cnn_bn"], arrays) == pytest.approx(3 / 7)
    assert transfer.targeted_success(m["cnn"], arrays) == 0.0  # not 1/8


def test_noise_success_skips_noise_whose_target_is_its_source() -> None:
    arrays = noise_arrays({"cnn": 3})
    m = models()
    assert transfer.noise_success(m["cnn"], arrays) == pytest.approx(3 / 4)
    assert transfer.noise_success(m["cnn_adv"], arrays) == 0.0  # not 1/5


def test_class_model_success_is_the_share_read_as_intended() -> None:
    arrays = class_model_arrays({"cnn_adv": 6}, {"cnn": 3})
    m = models()
    assert transfer.class_model_success(m["cnn_adv"], arrays) == pytest.approx(0.6)
    assert transfer.class_model_success(m["cnn"], arrays) == 0.0
    assert transfer.class_model_success(m["cnn"], arrays, "seeded_images") == pytest.approx(0.3)


def test_untargeted_success_counts_only_images_the_model_gets_right_clean() -> None:
    x_clean = torch.from_numpy(np.stack([image(everyone(c)) for c in (1, 2, 3, 4)]))
    y = torch.tensor([1, 2, 3, 4])
    x_clean[3] = torch.from_numpy(image({**everyone(4), "cnn": 5}))  # cnn: wrong when clean
    x_adv = x_clean.clone()
    x_adv[0] = torch.from_numpy(image({**everyone(1), "cnn": 0}))  # fools cnn
    x_adv[3] = torch.from_numpy(image(everyone(6)))  # "fools" all; cnn was wrong already
    m = models()
    # cnn: 1 of the 3 it got right, not 2 of 4
    assert transfer.untargeted_success(m["cnn"], x_adv, y, x_clean) == pytest.approx(1 / 3)
    assert transfer.untargeted_success(m["cnn_bn"], x_adv, y, x_clean) == pytest.approx(1 / 4)


@pytest.fixture(scope="module")
def stage_out():
    """``transfer.compute`` on the hand-made models and arrays, with PGD at eps 0.3."""
    arrays = {}
    for src in MODELS:
        arrays["targeted", src] = targeted_arrays(TARGETED[src])
        arrays["class_model", src] = class_model_arrays(CLASS_MODEL[src], SEEDED[src], src)
        arrays["noise", src] = noise_arrays(NOISE[src])
    # Clean test images read their label to every model by a small margin (0.6 vs 0.45),
    # which PGD at eps 0.3 overturns on the rows the attacked model reads, and only
    # there: each model's gradient is zero off its own row. Image 5 is misread by
    # cnn_bn when clean, so it never counts for cnn_bn.
    labels = torch.arange(8) % 10
    clean = [image(everyone(int(c)), on=0.6, off=0.45) for c in labels]
    clean[5] = image({**everyone(int(labels[5])), "cnn_bn": 9}, on=0.6, off=0.45)
    images = torch.from_numpy(np.round(np.stack(clean)[:, 0] * 255).astype(np.uint8))
    params = params_with(
        {
            "transfer": {"n_images": 8, "pgd_eps": 0.3},
            "attacks": {"pgd": {"steps": 10, "step_ratio": 0.1, "random_start": False}},
        }
    )
    return transfer.compute(
        models(),
        arrays,
        (images, labels),
        params=params,
        gen=torch.Generator().manual_seed(0),
        device="cpu",
    )


def success(out, form: str) -> list[list[float]]:
    """The stage's matrix for ``form`` as rows (crafted on) of columns (scored on)."""
    s = out.metrics["success"][form]
    assert list(s) == list(MODELS) and all(list(row) == list(MODELS) for row in s.values())
    return [[s[src][dst] for dst in MODELS] for src in MODELS]


@pytest.mark.parametrize(
    ("form", "counts", "total"),
    [
        ("targeted", TARGETED, 7),
        ("class_model", CLASS_MODEL, 10),
        ("noise", NOISE, 4),
        ("class_model_seeded", SEEDED, 10),
    ],
)
def test_rows_are_the_source_model_and_columns_the_scoring_model(
    stage_out, form: str, counts: dict, total: int
) -> None:
    np.testing.assert_allclose(success(stage_out, form), matrix(counts, total), atol=1e-6)


def test_pgd_diagonal_is_white_box_and_crafted_on_the_row_model(stage_out) -> None:
    """PGD crafted on a model moves only the pixels that model reads: it fools that model
    (the diagonal: white-box success) and no other. Crafting on the column's model, or
    scoring on the row's, would fill the off-diagonal cells."""
    np.testing.assert_allclose(success(stage_out, "pgd"), np.eye(3), atol=1e-6)
    assert stage_out.metrics["models"] == list(MODELS)
    assert stage_out.metrics["pgd_eps"] == 0.3


def test_figure_draws_each_matrix_with_sources_as_rows(stage_out) -> None:
    fig = stage_out.figures["transfer_matrix"]
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in heatmaps] == [
        "class_model",
        "targeted",
        "noise",
        "pgd (eps 0.3)",
    ]
    for ax, form in zip(heatmaps, ("class_model", "targeted", "noise", "pgd"), strict=True):
        assert ax.get_ylabel() == "crafted on" and ax.get_xlabel() == "scored on"
        assert [t.get_text() for t in ax.get_yticklabels()] == list(MODELS)
        assert [t.get_text() for t in ax.get_xticklabels()] == list(MODELS)
        drawn = np.asarray(ax.images[0].get_array())
        np.testing.assert_allclose(drawn, 100 * np.array(success(stage_out, form)), atol=1e-4)


def off_diagonal_mean(counts: dict[str, dict[str, int]], src: str) -> float:
    """The share of ``src``'s 10 class images the other two models read as intended."""
    return sum(counts[src].get(dst, 0) for dst in MODELS if dst != src) / (10 * (len(MODELS) - 1))


def test_class_image_judges_are_each_models_own(stage_out) -> None:
    """kNN and distance come from the model's own class_model arrays, the cross-model
    reading from its own row of the matrix of the same image set (never its column)."""
    judges = stage_out.metrics["class_image_judges"]
    assert list(judges) == ["seeded", "from_noise"]
    for m in MODELS:
        r = ROW[m]
        assert judges["seeded"][m] == pytest.approx(
            {
                "knn_accuracy": KNN_SEEDED[m] / 10,
                "nearest_l2": 1.0 + r,
                "cross_model": off_diagonal_mean(SEEDED, m),
                "seed_knn_accuracy": 0.1,
                "seed_nearest_l2": 7.0,
            }
        )
        assert judges["from_noise"][m] == pytest.approx(
            {
                "knn_accuracy": KNN_FROM_NOISE[m] / 10,
                "nearest_l2": 4.5 + 10 * r,
                "cross_model": off_diagonal_mean(CLASS_MODEL, m),
            }
        )
    # the expected cross-model readings differ from the columns' means: a swap would show
    assert off_diagonal_mean(SEEDED, "cnn_adv") == pytest.approx(0.85)
    assert judges["seeded"]["cnn"]["cross_model"] == pytest.approx(0.1)


def test_seeded_class_images_figure_rows_are_the_seeds_then_each_model(stage_out) -> None:
    fig = stage_out.figures["class_images_seeded"]
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 10 * (len(MODELS) + 1)
    judges = stage_out.metrics["class_image_judges"]["seeded"]
    seeds = class_model_arrays({}, {}, MODELS[0])["seeds"]
    assert axes[0].get_ylabel().splitlines()[0] == "seed"
    np.testing.assert_array_equal(np.asarray(axes[0].images[0].get_array()), seeds[0, 0])
    for r, m in enumerate(MODELS, start=1):
        label = axes[10 * r].get_ylabel().splitlines()
        assert label[0] == m
        assert label[1] == f"kNN {100 * judges[m]['knn_accuracy']:.0f}%"
        assert label[3] == f"others {100 * judges[m]['cross_model']:.0f}%"
        expected = class_images(SEEDED[m])
        for k in range(10):
            ax = axes[10 * r + k]
            np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), expected[k, 0])
            vote = int(knn_votes(KNN_SEEDED[m])[k])
            assert ax.get_xlabel() == f"kNN {vote}"
