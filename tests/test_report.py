"""The ``report`` stage's page, rendered from sentinel metrics and figures in a temp dir.

Every number in the metrics files is distinct (no two fields, no two models share one), so
the page passes only if each number shows up in its own model's row of its own table;
every figure file is distinct bytes, so the page passes only if it embeds each figure of
the registry, once, in its own model's section.

Two studies: the one ``params.yaml`` describes (its models, labels and forms, read from
it), and a grown one: five models, one an MLP whose visualize and attribution metrics say
what does not apply to it, and an attack form the template has never heard of.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from helpers.params import params_with
from helpers.report import Page, Study, expected_rows, missing_numbers
from mnistlab import report
from mnistlab.compare import scalars
from mnistlab.report.registry import FIGURES, absent_figures, registry_mismatch


def study_of_params() -> Study:
    params = params_with()
    return Study(
        tuple(params.models), {m: params.label(m) for m in params.models}, tuple(params.attacks)
    )


STUDY = study_of_params()
MODELS = STUDY.models
MLP = "mlp"  # the grown study's model without conv layers
NO_CONV = "no Conv2d layer"
GROWN = Study(
    ("small", "wide", "deep", "robust", MLP),
    {
        "small": "small CNN",
        "wide": "wide CNN",
        "deep": "deep CNN",
        "robust": "robust CNN",
        MLP: "MLP",
    },
    (*STUDY.forms, "blur"),
)
EXTRA_FIGURES = ("examples", "curve")  # what the new form draws, per model
TEST_ACCURACY = (0.91234, 0.95678, 0.93456, 0.97012, 0.98765)  # by model position
# Kinds whose figures sit in a section headed by their model's label.
SECTIONED = (
    "train",
    "evaluate",
    "visualize",
    "attribution",
    "attack/class_model",
    "attack/targeted",
    "attack/noise",
)


class Sentinels:
    """0.0613, 0.0726, 0.0839, ...: 0.0113 apart, so distinct at every precision the page
    prints (2 decimals of a percent, ``%.3f``, ``%.2f``, 3 significant digits)."""

    def __init__(self) -> None:
        self.k = 0

    def __call__(self) -> float:
        self.k += 1
        return round(0.05 + 0.0113 * self.k, 4)


METHODS = ("saliency", "smoothgrad", "integrated_gradients", "ig_blur", "grad_cam")
FILLS = ("black", "blur")


def attribution_metrics(s: Sentinels, m: str, *, none_passes: bool) -> dict[str, Any]:
    methods = [me for me in METHODS if not (m == MLP and me == "grad_cam")]
    deletion = {f: {me: s() for me in (*methods, "random")} for f in FILLS}
    ranking = {f: sorted(methods, key=deletion[f].get) for f in FILLS}
    passes = {me: me != "integrated_gradients" for me in methods}
    trusted = None if none_passes else next(me for me in ranking["blur"] if passes[me])
    out = {
        "fills": list(FILLS),
        "deletion_auc": deletion,
        "ranking": ranking,
        "best_method": {f: ranking[f][0] for f in FILLS},
        "best_deletion_auc_vs_random": {f: 1 + s() for f in FILLS},
        "sanity_spearman": {
            layer: {me: s() for me in methods} for layer in ("original", "fc2", "conv1")
        },
        "sanity_passes": passes,
        "trusted_fill": "blur",
        "trusted_method": trusted,
        "trusted_deletion_auc": None if trusted is None else deletion["blur"][trusted],
        "trusted_deletion_auc_vs_random": None if trusted is None else 0.5 + s(),
    }
    if m == MLP:
        out["not_applicable"] = {"grad_cam": NO_CONV}
    return out


def model_metrics(s: Sentinels, i: int, m: str) -> dict[str, Any]:
    """One model's evaluate, train, architecture, visualize and attribution metrics."""
    visualize = {
        "occlusion": {
            "images": [
                {
                    "index": 100 * i + j,
                    "label": j,
                    "base_prob": s(),
                    "min_prob": s(),
                    "min_at": [i, j],
                    "predicted_at_min": (j + 3) % 10,
                }
                for j in range(2)
            ]
        }
    }
    if m == MLP:
        visualize["not_applicable"] = {"filters": NO_CONV, "activations": NO_CONV}
    return {
        f"evaluate/{m}": {
            "test_accuracy": TEST_ACCURACY[i],
            "samples": [{"true": k, "predicted": (k + i) % 10} for k in range(6)],
        },
        f"train/{m}": {"val_accuracy": s(), "train_seconds": 100 * (i + 1) + s()},
        f"architecture/{m}": {
            "layers": [
                {
                    "name": "conv1",
                    "input_shape": [1, 28, 28],
                    "output_shape": [32, 28, 28],
                    "weights": 288 + i,
                    "biases": 32,
                    "params": 320 + i,
                    "neurons": 100 + i,
                }
            ],
            "total_params": 123_456 + 1000 * i,
            "conv_params": 2_345 + 1000 * i,
            "fc_params": 121_111 + 1000 * i,
            "total_neurons": 567 + 10 * i,
        },
        f"visualize/{m}": visualize,
        f"attribution/{m}": attribution_metrics(s, m, none_passes=i == 1),
    }


def attack_metrics(s: Sentinels, i: int, m: str, forms: tuple[str, ...]) -> dict[str, Any]:
    """One model's metrics of every attack form of the study (a new form: a few numbers)."""
    out: dict[str, Any] = {}
    for form in forms:
        if report.curve_forms([form]):  # a robust accuracy curve
            eps = ("0.0", "0.1", "0.3")
            out[f"attack/{form}-{m}"] = {"robust_accuracy": {e: s() for e in eps}}
        elif form == "strong":
            out[f"attack/strong-{m}"] = {
                "pgd_steps": 40,
                "clean_accuracy": s(),
                "robust_accuracy": {
                    kind: {e: s() for e in ("0.1", "0.3")} for kind in ("pgd", "strong", "gap")
                },
                # the last model: half the images never flip up to the search ceiling
                "min_eps": {"hi": 0.5, "median": None if i == 2 else s()},
                # AutoAttack's standard budget, the number set beside its table
                "standard": {"robust_accuracy": {"0.3": s()}},
            }
        elif form in report.known_forms():  # the class images, targeted attack, noise
            out[f"attack/{form}-{m}"] = {"success_rate": s(), "mean_confidence": s()}
        else:  # a new form: no confidence, so not in the success table
            out[f"attack/{form}-{m}"] = {"success_rate": s(), "mean_l2": 1 + s(), "per": [1]}
    if "noise" in forms:
        out[f"attack/noise-{m}"]["transfer"] = {"same_class_rate": s(), "other_class_rate": s()}
    return out


def transfer_metrics(s: Sentinels, study: Study) -> dict[str, Any]:
    models = study.models
    sets = [
        *(("class_model", "class_model_seeded") if "class_model" in study.forms else ()),
        *(f for f in ("targeted", "noise") if f in study.forms),
        *(f"{f}_set" for f in study.forms if f not in report.known_forms()),
        "pgd",
    ]
    success = {form: {src: {dst: s() for dst in models} for src in models} for form in sets}
    success["targeted"][models[0]][models[2]] = 0.4321  # crafted on the first, scored on 3rd
    success["targeted"][models[2]][models[0]] = 0.1234  # the other way round
    judges = {
        "seeded": {
            m: {
                "knn_accuracy": s(),
                "nearest_l2": 5 + s(),
                "cross_model": s(),
                "seed_knn_accuracy": s(),
                "seed_nearest_l2": 6 + s(),
            }
            for m in models
        },
        "from_noise": {
            m: {"knn_accuracy": s(), "nearest_l2": 7 + s(), "cross_model": s()} for m in models
        },
    }
    return {
        "models": list(models),
        "pgd_eps": 0.1,
        "success": success,
        "class_image_judges": judges,
    }


def sentinel_metrics(study: Study = STUDY) -> dict[str, Any]:
    """A complete metrics directory's contents, ``{relative path without .json: data}``."""
    s = Sentinels()
    out: dict[str, Any] = {}
    for i, m in enumerate(study.models):
        out |= model_metrics(s, i, m)
        out |= attack_metrics(s, i, m, study.forms)
    out["transfer"] = transfer_metrics(s, study)
    forms = {f: {m: scalars(out[f"attack/{f}-{m}"]) for m in study.models} for f in study.forms}
    out["compare"] = {"min_eps_median": {m: s() for m in study.models}, "forms": forms}
    return out


def png(text: str) -> bytes:
    """A valid 1x1 grey PNG carrying ``text`` (so that every figure has its own bytes)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        + chunk(b"tEXt", b"Comment\x00" + text.encode())
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


def registry_figures(
    study: Study = STUDY, metrics: dict[str, Any] | None = None
) -> dict[str, tuple[str, str | None]]:
    """Every figure the study draws: ``{plots-relative path: (kind, model or None)}``. A
    glob pattern is stood for by one name that matches it (compare's ``form_*``: one per
    form); a new form draws :data:`EXTRA_FIGURES`; a figure its stage's metrics say does
    not apply is not drawn."""
    metrics = metrics or {}
    kinds = {k: v for k, v in FIGURES.items() if not k.startswith("attack/")}
    kinds |= {f"attack/{f}": FIGURES.get(f"attack/{f}", EXTRA_FIGURES) for f in study.forms}
    out: dict[str, tuple[str, str | None]] = {}
    for kind, patterns in kinds.items():
        stage = kind.split("/")[0]
        if kind in ("transfer", "compare"):
            items: list[tuple[str | None, str | None]] = [(None, None)]
        elif kind.startswith("attack/"):
            items = [(f"{kind.split('/')[1]}-{m}", m) for m in study.models]
        else:
            items = [(m, m) for m in study.models]
        for item, model in items:
            folder = stage if item is None else f"{stage}/{item}"
            na = metrics.get(folder, {}).get("not_applicable")
            for pattern in patterns:
                if pattern == "form_*":
                    names = [f"form_{f}" for f in study.forms]
                else:
                    names = [pattern.replace("*", "3")]
                if pattern in absent_figures(kind, na):
                    continue
                for name in names:
                    out[f"{folder}/{name}.png"] = (kind, model)
    return out


def write_inputs(root: Path, metrics: dict[str, Any], study: Study = STUDY) -> tuple[Path, Path]:
    metrics_dir, plots = root / "metrics", root / "plots"
    for rel, data in metrics.items():
        path = metrics_dir / f"{rel}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    for rel in registry_figures(study, metrics):
        path = plots / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(rel))
    return metrics_dir, plots


def render(metrics: dict[str, Any], plots: Path, study: Study = STUDY) -> str:
    return report.render(
        metrics, plots, models=study.models, labels=study.labels, forms=study.forms
    )


def uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], Path]:
    """The page rendered from the sentinel metrics files, the metrics, the plots dir."""
    metrics_dir, plots = write_inputs(tmp_path_factory.mktemp("report"), sentinel_metrics())
    metrics = report.load_metrics(metrics_dir)
    return render(metrics, plots), metrics, plots


def test_sentinels_are_distinct() -> None:
    """The premise of the tests below: no number is shared by two fields or models."""
    leaves: list[float] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for key, x in v.items():
                if key != "trusted_deletion_auc":  # one of deletion_auc's, by definition
                    walk(x)
        elif isinstance(v, float):
            leaves.append(v)

    # architecture: counts; compare.forms: copies of the attack metrics, by definition
    skip = ("architecture", "compare")
    walk({k: v for k, v in sentinel_metrics().items() if not k.startswith(skip)})
    leaves = [v for v in leaves if v not in (0.5, 0.1)]  # min_eps.hi, transfer.pgd_eps
    assert len(leaves) == len(set(leaves)) > 150


def test_page_shows_each_number_in_its_models_row(rendered) -> None:
    html, metrics, _ = rendered
    assert missing_numbers(html, metrics, STUDY) == []
    assert len(expected_rows(metrics, STUDY)) >= 40  # 8 rows per model, 12 transfer rows, ...


def test_page_shows_the_sentinels_formatted_as_percentages(rendered) -> None:
    """The same check without the helper's formatting: literal strings."""
    page = Page(rendered[0])
    part1 = page.table("test accuracy (ours)")
    assert {r[0]: r[1] for r in part1.rows} == {
        STUDY.labels[m]: f"{100 * TEST_ACCURACY[i]:.2f}%" for i, m in enumerate(MODELS)
    }
    assert part1.rows[0][1] == "91.23%"
    targeted = {r[0]: r[1:] for r in page.table("crafted on \\ scored on", "targeted").rows}
    assert targeted[MODELS[0]][2] == "43.21%"  # row: crafted on the first; column: the 3rd
    assert targeted[MODELS[2]][0] == "12.34%"
    strong = {r[0]: r[-1] for r in page.table("median minimal eps").rows}
    assert strong[STUDY.labels[MODELS[2]]] == "– (> 0.5)"
    first = STUDY.labels[MODELS[0]]
    counts = {r[0]: r[1] for r in page.table("ours (from the modules)", f"{first}: layers").rows}
    assert counts["total parameters"] == "123,456"  # the first model's, not another model's


def test_the_reference_reports_numbers_stand_beside_the_studys(rendered) -> None:
    """REFERENCE is about the study's plain and BatchNorm CNNs: their rows show it."""
    page = Page(rendered[0])
    ref = {r[0]: r[2] for r in page.table("test accuracy (ours)").rows}
    assert ref[STUDY.labels["cnn"]] == "97.96%" and ref[STUDY.labels["cnn_bn"]] == "99.23%"
    assert "BatchNorm training time" in page.text


def test_swapped_metrics_files_are_caught(rendered, tmp_path: Path) -> None:
    """A page that reads the first model's numbers from the second's files (and back)
    does not pass."""
    _, metrics, plots = rendered
    a, b = MODELS[0], MODELS[1]
    swapped = dict(metrics)
    for x, y in ((f"evaluate/{a}", f"evaluate/{b}"), (f"attack/strong-{a}", f"attack/strong-{b}")):
        swapped[x], swapped[y] = metrics[y], metrics[x]
    problems = missing_numbers(render(swapped, plots), metrics, STUDY)
    assert len(problems) == 6  # two rows of three tables (test accuracy, strong, anchors)
    transposed = json.loads(json.dumps(metrics))
    t = transposed["transfer"]["success"]["targeted"]
    transposed["transfer"]["success"]["targeted"] = {
        src: {dst: t[dst][src] for dst in MODELS} for src in MODELS
    }
    problems = missing_numbers(render(transposed, plots), metrics, STUDY)
    assert len(problems) == len(MODELS) and all("(targeted)" in p for p in problems)


def test_page_embeds_every_registered_figure_once(rendered) -> None:
    html, _, plots = rendered
    figures = registry_figures()
    assert {kind for kind, _ in figures.values()} == set(FIGURES)
    for rel in figures:
        assert html.count(uri(plots / rel)) == 1, rel
    assert len(Page(html).images) == len(figures)


def test_each_models_figures_sit_in_its_section(rendered) -> None:
    html, _, plots = rendered
    where = {img.src: img.heading for img in Page(html).images}
    checked = 0
    for rel, (kind, model) in registry_figures().items():
        if kind in SECTIONED:
            assert model is not None
            assert where[uri(plots / rel)] == STUDY.labels[model], rel
            checked += 1
    assert checked == len(MODELS) * sum(len(FIGURES[k]) for k in SECTIONED)


def test_missing_figure_or_metrics_file_fails_the_page(rendered, tmp_path: Path) -> None:
    _, metrics, plots = rendered
    copy = tmp_path / "plots"
    shutil.copytree(plots, copy)
    (copy / f"evaluate/{MODELS[1]}/confusion.png").unlink()
    with pytest.raises(report.ReportError, match=f"evaluate/{MODELS[1]}/confusion.png"):
        render(metrics, copy)
    with pytest.raises(report.ReportError, match="metrics/transfer.json"):
        render({k: v for k, v in metrics.items() if k != "transfer"}, plots)


def test_missing_globbed_figure_fails_the_page(rendered, tmp_path: Path) -> None:
    _, metrics, plots = rendered
    copy = tmp_path / "plots"
    shutil.copytree(plots, copy)
    (copy / f"attack/noise-{MODELS[1]}/noise_transfer.png").unlink()
    with pytest.raises(report.ReportError, match="noise_transfer"):
        render(metrics, copy)


# --------------------------------------------------------------- a grown study


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], Path]:
    """Five models (one an MLP: no filters, activations or Grad-CAM) and a new form."""
    root = tmp_path_factory.mktemp("grown")
    metrics_dir, plots = write_inputs(root, sentinel_metrics(GROWN), GROWN)
    metrics = report.load_metrics(metrics_dir)
    return render(metrics, plots, GROWN), metrics, plots


def test_grown_page_shows_each_number_in_its_models_row(grown) -> None:
    html, metrics, _ = grown
    assert missing_numbers(html, metrics, GROWN) == []
    matrix = Page(html).table("crafted on \\ scored on", "targeted")
    assert [r[0] for r in matrix.rows] == list(GROWN.models)
    assert all(len(r) == 1 + len(GROWN.models) for r in matrix.rows)  # 5 x 5


def test_grown_page_says_what_does_not_apply(grown) -> None:
    page = Page(grown[0])
    assert f"conv1 filters: not applicable: {NO_CONV}" in page.text
    assert f"every conv layer's activations: not applicable: {NO_CONV}" in page.text
    for fill in FILLS:
        row = {r[0]: r for r in page.table(f"model, {fill} fill").rows}["MLP"]
        assert f"not applicable: {NO_CONV}" in row  # its Grad-CAM cell


def test_grown_page_has_every_models_architecture(grown) -> None:
    page = Page(grown[0])
    tables = [t for t in page.tables if "ours (from the modules)" in t.header]
    assert [t.heading for t in tables] == [f"{GROWN.labels[m]}: layers" for m in GROWN.models]


def test_grown_page_names_no_fixed_number_of_models(grown) -> None:
    assert "three" not in grown[0].lower()
    assert "BatchNorm training time" not in Page(grown[0]).text  # the study's models absent


def test_a_new_form_shows_its_table_and_every_figure_it_drew(grown) -> None:
    html, metrics, plots = grown
    page = Page(html)
    table = page.table("blur: model", "blur")
    assert table.header == ["blur: model", "success_rate", "mean_l2"]  # numbers only
    where = {img.src: img.heading for img in page.images}
    for m in GROWN.models:
        for name in EXTRA_FIGURES:
            assert where[uri(plots / f"attack/blur-{m}/{name}.png")] == "blur"
    assert where[uri(plots / "compare/form_blur.png")] == "blur"


def test_grown_page_embeds_every_figure_drawn_once(grown) -> None:
    html, metrics, plots = grown
    figures = registry_figures(GROWN, metrics)
    assert "visualize/mlp/conv1_filters.png" not in figures  # not applicable: not drawn
    for rel in figures:
        assert html.count(uri(plots / rel)) == 1, rel
    assert len(Page(html).images) == len(figures)


# --------------------------------------------------------------- the registry


def test_deeper_filters_follow_the_models_conv_layers() -> None:
    names = [
        "occlusion",
        "conv10_filters_all",
        "conv2_filters_all",
        "conv1_filters",
        "conv2_filters_channel0",
        "conv10_filters_channel0",
    ]
    assert report.deeper_filters(names) == [
        ("conv2_filters_channel0", "conv2 filters, input channel 0"),
        ("conv2_filters_all", "all conv2 filters"),
        ("conv10_filters_channel0", "conv10 filters, input channel 0"),
        ("conv10_filters_all", "all conv10 filters"),
    ]
    assert report.deeper_filters(["conv1_filters", "activations"]) == []  # one conv layer


def test_registry_accepts_any_conv_depth_and_what_does_not_apply() -> None:
    one_conv = ["conv1_filters", "activations", "occlusion"]
    assert registry_mismatch("visualize", one_conv) == ([], [])
    three = [*one_conv, *(f"conv{k}_filters_{w}" for k in (2, 3) for w in ("channel0", "all"))]
    assert registry_mismatch("visualize", three) == ([], [])
    mlp = {"filters": NO_CONV, "activations": NO_CONV}
    assert registry_mismatch("visualize", ["occlusion"], mlp) == ([], [])
    assert registry_mismatch("visualize", ["occlusion"]) == (["conv1_filters", "activations"], [])
    assert registry_mismatch("visualize", [*one_conv, "extra"]) == ([], ["extra"])


def test_registry_lets_a_new_form_draw_anything() -> None:
    assert registry_mismatch("attack/blur", ["a", "b"]) == ([], [])
    assert registry_mismatch("attack/blur", []) == ([], [])
    assert registry_mismatch("attack/pgd", []) == (["robustness"], [])
    no_judges = {"class_image_judges": "no class_model attack form in params.yaml"}
    assert registry_mismatch("transfer", ["transfer_matrix"], no_judges) == ([], [])
