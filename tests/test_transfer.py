"""The ``transfer`` stage's science on hand-made models: rows are the model an attack was
crafted on, columns the model it is scored on.

Each model here reads its class off one row of pixels (the first model row 0, the second
row 1, ...), so an image can say a different class to each model and every cell of every
matrix is known in advance. The matrices are asymmetric: a transposed one (sources and
targets swapped anywhere along the way) fails.

The attack forms hand their examples over through the transfer-set contract
(``mnistlab.transfer``): the sets here are what the class_model, targeted and noise forms
write (their writers are checked against the contract at the end, on real attacks), plus
a form the stage has never heard of.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers.params import params_with, raw_params
from mnistlab import transfer
from mnistlab.core.config import parse_params
from mnistlab.core.files import write_npz

MODELS = ("plain", "batchnorm", "robust")  # the pipeline's study is not assumed here
ROW = {m: i for i, m in enumerate(("plain", "batchnorm", "robust", "fourth"))}


class RowReader(nn.Module):
    """Logits are pixels ``[row, 0:10]``: the class is the brightest of those ten."""

    def __init__(self, row: int) -> None:
        super().__init__()
        self.row = row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * x[:, 0, self.row, :10]


def models(names=MODELS) -> dict[str, nn.Module]:
    return {m: RowReader(ROW[m]) for m in names}


def image(reads: dict[str, int], *, on: float = 0.9, off: float = 0.1) -> np.ndarray:
    """One ``(1, 28, 28)`` image that each model ``m`` classifies as ``reads[m]``."""
    img = np.zeros((1, 28, 28), dtype=np.float32)
    for m, cls in reads.items():
        img[0, ROW[m], :10] = off
        img[0, ROW[m], cls] = on
    return img


def everyone(cls: int, names=MODELS) -> dict[str, int]:
    return dict.fromkeys(names, cls)


def set_arrays(name: str, images: np.ndarray, targets, mode: str = "targeted") -> dict:
    """One transfer set as an attack form saves it (the contract's keys)."""
    return {
        f"transfer.{name}.images": np.asarray(images, dtype=np.float32),
        f"transfer.{name}.targets": np.asarray(targets, dtype=np.int64),
        f"transfer.{name}.mode": np.array(mode),
    }


def targeted_set(fooled: dict[str, int]) -> dict[str, np.ndarray]:
    """The targeted form's set for targets (3, 7) x originals (labels 3, 5, 1, 8): the 7
    pairs whose original is not the target (the writer drops 3 -> 3), fooling the models
    in ``fooled`` on its count of them; the rest keep the original class."""
    images, targets = [], []
    for target in (3, 7):
        for orig in (3, 5, 1, 8):
            if orig == target:
                continue
            k = len(images)
            reads = {m: target if k < n else orig for m, n in fooled.items()}
            images.append(image({**everyone(orig), **reads}))
            targets.append(target)
    return set_arrays("targeted", np.stack(images), targets)


def class_images(read_by: dict[str, int]) -> np.ndarray:
    """Images made for classes 0-9: model ``m`` reads the first ``read_by[m]`` of them as
    intended and the rest as the next class."""
    reads = [{m: k if k < read_by.get(m, 0) else (k + 1) % 10 for m in MODELS} for k in range(10)]
    return np.stack([image(r) for r in reads])


def knn_votes(n_right: int) -> np.ndarray:
    """kNN votes for images 0-9: the first ``n_right`` the intended class, the rest the next."""
    return np.array([k if k < n_right else (k + 1) % 10 for k in range(10)])


def class_model_arrays(
    read_by: dict[str, int], seeded_by: dict[str, int] | None = None, source: str = "plain"
) -> dict[str, np.ndarray]:
    """What a class_model stage saves: its two transfer sets (images grown from noise, read
    as ``read_by``; images from a seed, read as ``seeded_by``; image k made for class k) and
    the training-digit judges of both and of the seed, with values that say which
    ``source`` model they belong to."""
    r = ROW[source]
    return {
        "knn_class": knn_votes(KNN_FROM_NOISE[source]),
        "nearest_l2": np.arange(10, dtype=np.float32) + 10 * r,  # mean 4.5 + 10 r
        "seeded_images": class_images(seeded_by or {}),
        "seeded_knn_class": knn_votes(KNN_SEEDED[source]),
        "seeded_nearest_l2": np.full(10, 1.0 + r, dtype=np.float32),
        "seeds": np.full((10, 1, 28, 28), 0.1 * (r + 1), dtype=np.float32),
        "seed_knn_class": knn_votes(1),
        "seed_nearest_l2": np.full(10, 7.0, dtype=np.float32),
        **set_arrays("class_model", class_images(read_by), np.arange(10)),
        **set_arrays("class_model_seeded", class_images(seeded_by or {}), np.arange(10)),
    }


def noise_set(fooled: dict[str, int]) -> dict[str, np.ndarray]:
    """The noise form's set: class 2 to targets 0, 1, 4, 6 (the writer drops 2 -> 2):
    model ``m`` is fooled on ``fooled[m]`` of four."""
    images = []
    for i, target in enumerate((0, 1, 4, 6)):
        reads = {m: target if i < k else 2 for m, k in fooled.items()}
        images.append(image({**everyone(2), **reads}))
    return set_arrays("noise", np.stack(images), [0, 1, 4, 6])


# Expected matrices, rows: crafted on, columns: scored on (plain, batchnorm, robust).
TARGETED = {  # on plain: fools itself and 3 of 7 on robust; on robust: fails even white-box
    "plain": {"plain": 7, "robust": 3},
    "batchnorm": {"batchnorm": 7},
    "robust": {},
}
CLASS_MODEL = {  # the robust model's class images are read as intended by every model
    "plain": {"plain": 10},
    "batchnorm": {"batchnorm": 10, "plain": 5},
    "robust": {"plain": 10, "batchnorm": 10, "robust": 10},
}
NOISE = {
    "plain": {"plain": 4, "batchnorm": 1},
    "batchnorm": {"batchnorm": 4},
    "robust": {"robust": 2},
}
SEEDED = {  # the seeded class images: robust's are read as intended by the other two
    "plain": {"plain": 10, "batchnorm": 2},
    "batchnorm": {"batchnorm": 10, "robust": 1},
    "robust": {"plain": 9, "batchnorm": 8, "robust": 10},
}
KNN_SEEDED = {"plain": 1, "batchnorm": 3, "robust": 9}  # seeded images whose kNN vote is right
KNN_FROM_NOISE = {"plain": 2, "batchnorm": 0, "robust": 4}


def matrix(counts: dict[str, dict[str, int]], total: int, names=MODELS) -> list[list[float]]:
    return [[counts[src].get(dst, 0) / total for dst in names] for src in names]


def study_arrays() -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """``{(form, model): arrays}`` as the stage loads them for the three forms with sets."""
    arrays = {}
    for src in MODELS:
        arrays["class_model", src] = class_model_arrays(CLASS_MODEL[src], SEEDED[src], src)
    for src in MODELS:
        arrays["targeted", src] = targeted_set(TARGETED[src])
    for src in MODELS:
        arrays["noise", src] = noise_set(NOISE[src])
    return arrays


def test_matrix_helpers_are_not_symmetric() -> None:
    """The cases below would not catch a transposition if they were symmetric."""
    for counts, total in ((TARGETED, 7), (CLASS_MODEL, 10), (NOISE, 4), (SEEDED, 10)):
        mat = np.array(matrix(counts, total))
        assert not np.allclose(mat, mat.T)


# --------------------------------------------------------------------------- the contract


def test_transfer_sets_reads_every_set_in_the_order_written() -> None:
    arrays = {"images": np.zeros((2, 1, 28, 28)), **class_model_arrays({}, {})}
    sets = transfer.transfer_sets(arrays)
    assert list(sets) == ["class_model", "class_model_seeded"]
    images, targets, mode = sets["class_model"]
    assert images.shape == (10, 1, 28, 28) and images.dtype == np.float32
    assert targets.tolist() == list(range(10)) and targets.dtype == np.int64
    assert mode == "targeted"
    assert transfer.transfer_sets({"images": np.zeros((2, 1, 28, 28))}) == {}


def test_transfer_sets_survive_the_arrays_file(tmp_path) -> None:
    """The mode is a 0-d str array: it goes through write_npz and np.load (no pickle)."""
    write_npz(tmp_path / "a.npz", {"x": np.zeros(3), **noise_set({"plain": 1})})
    with np.load(tmp_path / "a.npz") as f:
        assert transfer.writes_sets(f.files)
        sets = transfer.transfer_sets(dict(f))
    assert sets["noise"].mode == "targeted" and sets["noise"].targets.tolist() == [0, 1, 4, 6]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"transfer.a.images": np.zeros((1, 1, 28, 28))}, "transfer.a: missing targets, mode"),
        ({"transfer.a.labels": np.zeros(1)}, "transfer.a.labels: not transfer"),
        ({"transfer.images": np.zeros(1)}, "not transfer"),
        (set_arrays("a", np.zeros((2, 28, 28)), [1, 2]), r"images: shape \(2, 28, 28\)"),
        (set_arrays("a", np.zeros((2, 1, 28, 28)), [1]), "targets"),
        (set_arrays("a", np.zeros((1, 1, 28, 28)), [1], mode="both"), "mode"),
    ],
)
def test_transfer_sets_outside_the_contract_fail_named(arrays, match: str) -> None:
    with pytest.raises(transfer.TransferSetError, match=match):
        transfer.transfer_sets(arrays, "fake-m")


def test_set_success_targeted_and_untargeted() -> None:
    m = models()
    images = np.stack([image({**everyone(1), "plain": 5}), image(everyone(2))])
    targeted = transfer.TransferSet(images, np.array([5, 7]), "targeted")
    untargeted = transfer.TransferSet(images, np.array([1, 2]), "untargeted")  # true labels
    assert transfer.set_success(m["plain"], targeted) == pytest.approx(0.5)
    assert transfer.set_success(m["robust"], targeted) == 0.0
    assert transfer.set_success(m["plain"], untargeted) == pytest.approx(0.5)  # 5 != 1
    assert transfer.set_success(m["robust"], untargeted) == 0.0
    empty = transfer.TransferSet(images[:0], np.array([], dtype=np.int64), "targeted")
    assert transfer.set_success(m["plain"], empty) is None


def test_gather_sets_refuses_clashing_or_uneven_sets() -> None:
    names = ["plain", "batchnorm"]
    clash = {("a", m): noise_set({}) for m in names} | {("b", m): noise_set({}) for m in names}
    with pytest.raises(transfer.TransferSetError, match="'noise' is taken by form a"):
        transfer.gather_sets(clash, names)
    uneven = {("a", "plain"): noise_set({}), ("a", "batchnorm"): {}}
    with pytest.raises(transfer.TransferSetError, match="model batchnorm writes"):
        transfer.gather_sets(uneven, names)
    pgd = {("a", m): set_arrays("pgd", np.zeros((1, 1, 28, 28)), [1]) for m in names}
    with pytest.raises(transfer.TransferSetError, match="this stage's own PGD"):
        transfer.gather_sets(pgd, names)


def test_untargeted_success_counts_only_images_the_model_gets_right_clean() -> None:
    x_clean = torch.from_numpy(np.stack([image(everyone(c)) for c in (1, 2, 3, 4)]))
    y = torch.tensor([1, 2, 3, 4])
    x_clean[3] = torch.from_numpy(image({**everyone(4), "plain": 5}))  # plain: wrong when clean
    x_adv = x_clean.clone()
    x_adv[0] = torch.from_numpy(image({**everyone(1), "plain": 0}))  # fools plain
    x_adv[3] = torch.from_numpy(image(everyone(6)))  # "fools" all; plain was wrong already
    m = models()
    # plain: 1 of the 3 it got right, not 2 of 4
    assert transfer.untargeted_success(m["plain"], x_adv, y, x_clean) == pytest.approx(1 / 3)
    assert transfer.untargeted_success(m["batchnorm"], x_adv, y, x_clean) == pytest.approx(1 / 4)


# --------------------------------------------------------------------------- the stage


def clean_test(names=MODELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean test images read their label to every model by a small margin (0.6 vs 0.45),
    which PGD at eps 0.3 overturns on the rows the attacked model reads, and only there:
    each model's gradient is zero off its own row. Image 5 is misread by the second model
    when clean, so it never counts for it."""
    labels = torch.arange(8) % 10
    clean = [image(everyone(int(c), names), on=0.6, off=0.45) for c in labels]
    other = names[min(1, len(names) - 1)]
    clean[5] = image({**everyone(int(labels[5]), names), other: 9}, on=0.6, off=0.45)
    return torch.from_numpy(np.round(np.stack(clean)[:, 0] * 255).astype(np.uint8)), labels


PGD_PARAMS = {
    "transfer": {"n_images": 8, "pgd_eps": 0.3},
    "attacks": {"pgd": {"steps": 10, "step_ratio": 0.1, "random_start": False}},
}


@pytest.fixture(scope="module")
def stage_out():
    """``transfer.compute`` on the hand-made models and arrays, with PGD at eps 0.3."""
    return transfer.compute(
        models(),
        study_arrays(),
        clean_test(),
        params=params_with(PGD_PARAMS),
        gen=torch.Generator().manual_seed(0),
        device="cpu",
    )


def success(out, form: str, names=MODELS) -> list[list[float]]:
    """The stage's matrix for ``form`` as rows (crafted on) of columns (scored on)."""
    s = out.metrics["success"][form]
    assert list(s) == list(names) and all(list(row) == list(names) for row in s.values())
    return [[s[src][dst] for dst in names] for src in names]


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


def test_the_study_keeps_its_matrices_and_keys(stage_out) -> None:
    """metrics/transfer.json of the study: the same matrices, models and judges as before
    the contract (sets in the forms' order, the stage's PGD last)."""
    assert list(stage_out.metrics) == ["models", "pgd_eps", "success", "class_image_judges"]
    written = [  # each form's sets, the forms in the order the stage read them
        name
        for (_, m), arrays in study_arrays().items()
        if m == MODELS[0]
        for name in transfer.transfer_sets(arrays)
    ]
    assert len(written) == 4  # class images grown from noise and seeded, targeted, noise
    assert list(stage_out.metrics["success"]) == [*written, transfer.PGD]


def test_pgd_diagonal_is_white_box_and_crafted_on_the_row_model(stage_out) -> None:
    """PGD crafted on a model moves only the pixels that model reads: it fools that model
    (the diagonal: white-box success) and no other. Crafting on the column's model, or
    scoring on the row's, would fill the off-diagonal cells."""
    np.testing.assert_allclose(success(stage_out, "pgd"), np.eye(3), atol=1e-6)
    assert stage_out.metrics["models"] == list(MODELS)
    assert stage_out.metrics["pgd_eps"] == 0.3


def heatmaps(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


def test_figure_draws_each_matrix_with_sources_as_rows(stage_out) -> None:
    fig = stage_out.figures["transfer_matrix"]
    sets = list(stage_out.metrics["success"])
    assert [ax.get_title() for ax in heatmaps(fig)] == [*sets[:-1], "pgd (eps 0.3)"]
    for ax, form in zip(heatmaps(fig), sets, strict=True):
        assert ax.get_ylabel() == "crafted on" and ax.get_xlabel() == "scored on"
        assert [t.get_text() for t in ax.get_yticklabels()] == list(MODELS)
        assert [t.get_text() for t in ax.get_xticklabels()] == list(MODELS)
        drawn = np.asarray(ax.images[0].get_array())
        np.testing.assert_allclose(drawn, 100 * np.array(success(stage_out, form)), atol=1e-4)


def off_diagonal_mean(counts: dict[str, dict[str, int]], src: str) -> float:
    """The share of ``src``'s 10 class images the other models read as intended."""
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
    assert off_diagonal_mean(SEEDED, "robust") == pytest.approx(0.85)
    assert judges["seeded"]["plain"]["cross_model"] == pytest.approx(0.1)


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


# --------------------------------------------------------------- any models, any form

FOUR = ("plain", "batchnorm", "robust", "fourth")
FAKE = {  # untargeted: crafted on src, the images each dst misreads (of 5, true label 4)
    "plain": {"plain": 5, "fourth": 2},
    "batchnorm": {"batchnorm": 3},
    "robust": {"plain": 1, "batchnorm": 1, "robust": 4},
    "fourth": {"fourth": 5, "robust": 2},
}


def fake_set(fooled: dict[str, int]) -> dict[str, np.ndarray]:
    """A form the stage does not know saves an untargeted set: five images of class 4,
    model ``m`` misreading the first ``fooled[m]`` of them as 9."""
    images = [
        image({**everyone(4, FOUR), **{m: 9 for m, k in fooled.items() if i < k}}) for i in range(5)
    ]
    return set_arrays("fake_blur", np.stack(images), [4] * 5, mode="untargeted")


@pytest.fixture(scope="module")
def four_out():
    """Four models, a new form with a set, and a form that saves none (fgsm-like)."""
    arrays = {("fake", m): {"noise": np.zeros(3), **fake_set(FAKE[m])} for m in FOUR}
    arrays |= {("fgsm", m): {"indices": np.arange(3)} for m in FOUR}
    return transfer.compute(
        models(FOUR),
        arrays,
        clean_test(FOUR),
        params=params_with(PGD_PARAMS),
        gen=torch.Generator().manual_seed(0),
        device="cpu",
    )


def test_a_new_forms_set_gets_a_matrix_over_every_model(four_out) -> None:
    assert list(four_out.metrics["success"]) == ["fake_blur", "pgd"]  # fgsm: no set
    np.testing.assert_allclose(
        success(four_out, "fake_blur", FOUR), matrix(FAKE, 5, FOUR), atol=1e-6
    )
    np.testing.assert_allclose(success(four_out, "pgd", FOUR), np.eye(4), atol=1e-6)
    assert four_out.metrics["models"] == list(FOUR)


def test_without_the_class_model_form_the_judges_are_not_applicable(four_out) -> None:
    assert "class_image_judges" not in four_out.metrics
    assert set(four_out.metrics["not_applicable"]) == {"class_image_judges"}
    assert set(four_out.figures) == {"transfer_matrix"}


def test_heatmaps_size_with_the_models(four_out, stage_out) -> None:
    fig = four_out.figures["transfer_matrix"]
    maps = heatmaps(fig)
    assert [ax.get_title() for ax in maps] == ["fake_blur", "pgd (eps 0.3)"]
    for ax in maps:
        assert [t.get_text() for t in ax.get_xticklabels()] == list(FOUR)
        assert np.asarray(ax.images[0].get_array()).shape == (4, 4)
    five = stage_out.figures["transfer_matrix"]  # five panels of 3x3: two rows of three
    assert len(heatmaps(five)) == 5 and five.get_size_inches()[1] > fig.get_size_inches()[1]


def test_without_the_pgd_form_the_stage_crafts_no_pgd() -> None:
    raw = raw_params(PGD_PARAMS)
    del raw["attacks"]["pgd"]
    out = transfer.compute(
        models(),
        {("targeted", m): targeted_set(TARGETED[m]) for m in MODELS},
        clean_test(),
        params=parse_params(raw),
        gen=torch.Generator().manual_seed(0),
        device="cpu",
    )
    assert list(out.metrics["success"]) == ["targeted"]
    assert set(out.metrics["not_applicable"]) == {"pgd", "class_image_judges"}


def test_one_model_has_no_cross_model_reading() -> None:
    out = transfer.compute(
        models(("plain",)),
        {("class_model", "plain"): class_model_arrays({"plain": 10}, {"plain": 10})},
        clean_test(("plain",)),
        params=params_with(PGD_PARAMS),
        gen=torch.Generator().manual_seed(0),
        device="cpu",
    )
    assert out.metrics["class_image_judges"]["seeded"]["plain"]["cross_model"] is None
    assert set(out.figures) == {"transfer_matrix", "class_images_seeded"}


def test_stage_reads_only_the_forms_that_write_sets(tmp_path) -> None:
    """The stage's loader: a form whose files hold no ``transfer.*`` array is skipped."""
    from stages.transfer import load_sets

    for m in ("plain", "batchnorm"):
        write_npz(tmp_path / f"fake-{m}.npz", {"x": np.zeros(2), **fake_set({})})
        write_npz(tmp_path / f"fgsm-{m}.npz", {"indices": np.arange(3)})
    arrays = load_sets(tmp_path, ["fgsm", "fake"], ["plain", "batchnorm"])
    assert list(arrays) == [("fake", "plain"), ("fake", "batchnorm")]
    assert set(transfer.transfer_sets(arrays["fake", "plain"])) == {"fake_blur"}


# --------------------------------------------------------------- the writers: real attacks


@pytest.fixture(scope="module")
def writer_inputs():
    """The small MNIST subset and a nearest-class-mean classifier (differentiable, right on
    most digits: every class has a correctly read original), no training."""
    from helpers.mnist_small import load_small
    from mnistlab.core.tensors import to_pixels

    train, test = load_small("train"), load_small("test")
    x = to_pixels(train[0]).flatten(1)  # (N, 784)
    means = torch.stack([x[train[1] == c].mean(0) for c in range(10)])  # (10, 784)

    class Nearest(nn.Module):
        def forward(self, v: torch.Tensor) -> torch.Tensor:
            v = v.flatten(1)
            return 2 * v @ means.T - (means**2).sum(1)  # -||v - mean||^2 + ||v||^2

    return Nearest().eval(), train, (test[0][:500], test[1][:500])


def run_form(form: str, writer_inputs, overrides: dict):
    import importlib

    from mnistlab.attacks.common.inputs import AttackInputs

    model, train, test = writer_inputs
    params = params_with({"attacks": {form: overrides}})
    mod = importlib.import_module(f"mnistlab.attacks.{form}")
    train = train if getattr(mod, "USES_TRAIN", False) else None
    out = mod.compute(
        AttackInputs(model, test, params, torch.Generator().manual_seed(0), "cpu", train)
    )
    import matplotlib.pyplot as plt

    plt.close("all")
    return out.arrays


def test_targeted_form_writes_its_pairs_without_original_equal_target(writer_inputs) -> None:
    a = run_form("targeted", writer_inputs, {"steps": 2})
    sets = transfer.transfer_sets(a, "targeted")
    assert list(sets) == ["targeted"]
    pairs = a["original_labels"][None, :] != a["targets"][:, None]  # (T, N), t-major
    s = sets["targeted"]
    np.testing.assert_array_equal(s.images, a["images"][pairs])
    np.testing.assert_array_equal(
        s.targets, np.broadcast_to(a["targets"][:, None], pairs.shape)[pairs]
    )
    assert s.mode == "targeted" and len(s.targets) == pairs.sum() < pairs.size


def test_noise_form_writes_its_pairs_without_source_equal_target(writer_inputs) -> None:
    a = run_form("noise", writer_inputs, {"steps": 2})
    s = transfer.transfer_sets(a, "noise")["noise"]
    real = a["sources"] != a["targets"]
    np.testing.assert_array_equal(s.images, a["images"][real])
    np.testing.assert_array_equal(s.targets, a["targets"][real])
    assert s.mode == "targeted" and len(s.targets) == real.sum() < real.size


def test_class_model_form_writes_both_image_sets(writer_inputs) -> None:
    overrides = {"steps": 2, "synthesis": {"steps": 2, "step_size": 0.5, "eps_l2": 1.0}, "knn_k": 3}
    a = run_form("class_model", writer_inputs, overrides)
    sets = transfer.transfer_sets(a, "class_model")
    assert list(sets) == ["class_model", "class_model_seeded"]
    np.testing.assert_array_equal(sets["class_model"].images, a["images"])
    np.testing.assert_array_equal(sets["class_model_seeded"].images, a["seeded_images"])
    for s in sets.values():
        assert s.targets.tolist() == list(range(10)) and s.mode == "targeted"
