"""The ``report`` stage's page, rendered from sentinel metrics and figures in a temp dir.

Every number in the metrics files is distinct (no two fields, no two models share one), so
the page passes only if each number shows up in its own model's row of its own table;
every figure file is distinct bytes, so the page passes only if it embeds each figure of
the registry, once, in its own model's section.
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

from helpers.report import Page, expected_rows, missing_numbers
from mnistlab import report
from mnistlab.core.params_types import MODEL_NAMES
from mnistlab.report.registry import FIGURES

FORMS = ("class_model", "targeted", "noise", "fgsm", "pgd", "strong")
TEST_ACCURACY = {"cnn": 0.91234, "cnn_bn": 0.95678, "cnn_adv": 0.93456}
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


def sentinel_metrics() -> dict[str, Any]:
    """A complete metrics directory's contents, ``{relative path without .json: data}``."""
    s = Sentinels()
    out: dict[str, Any] = {}
    methods = ("saliency", "smoothgrad", "integrated_gradients", "ig_blur", "grad_cam")
    fills = ("black", "blur")
    for i, m in enumerate(MODEL_NAMES):
        out[f"evaluate/{m}"] = {
            "test_accuracy": TEST_ACCURACY[m],
            "samples": [{"true": k, "predicted": (k + i) % 10} for k in range(6)],
        }
        out[f"train/{m}"] = {"val_accuracy": s(), "train_seconds": 100 * (i + 1) + s()}
        out[f"architecture/{m}"] = {
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
        }
        out[f"visualize/{m}"] = {
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
        deletion = {f: {me: s() for me in (*methods, "random")} for f in fills}
        ranking = {f: sorted(methods, key=deletion[f].get) for f in fills}
        passes = {me: me != "integrated_gradients" for me in methods}
        trusted = None if m == "cnn_bn" else next(me for me in ranking["blur"] if passes[me])
        out[f"attribution/{m}"] = {
            "fills": list(fills),
            "deletion_auc": deletion,
            "ranking": ranking,
            "best_method": {f: ranking[f][0] for f in fills},
            "best_deletion_auc_vs_random": {f: 1 + s() for f in fills},
            "sanity_spearman": {layer: {me: s() for me in methods} for layer in ("fc2", "conv1")},
            "sanity_passes": passes,
            "trusted_fill": "blur",
            "trusted_method": trusted,  # cnn_bn: none passes
            "trusted_deletion_auc": None if trusted is None else deletion["blur"][trusted],
            "trusted_deletion_auc_vs_random": None if trusted is None else 0.5 + s(),
        }
        for form in ("class_model", "targeted", "noise"):
            out[f"attack/{form}-{m}"] = {"success_rate": s(), "mean_confidence": s()}
        out[f"attack/noise-{m}"]["transfer"] = {"same_class_rate": s(), "other_class_rate": s()}
        for form in ("fgsm", "pgd"):
            out[f"attack/{form}-{m}"] = {"robust_accuracy": {e: s() for e in ("0.0", "0.1", "0.3")}}
        out[f"attack/strong-{m}"] = {
            "pgd_steps": 40,
            "clean_accuracy": s(),
            "robust_accuracy": {
                kind: {e: s() for e in ("0.1", "0.3")} for kind in ("pgd", "strong", "gap")
            },
            # cnn_adv: half the images never flip up to the search ceiling
            "min_eps": {"hi": 0.5, "median": None if m == "cnn_adv" else s()},
        }
    success = {
        form: {src: {dst: s() for dst in MODEL_NAMES} for src in MODEL_NAMES}
        for form in ("class_model", "targeted", "noise", "pgd")
    }
    success["targeted"]["cnn"]["cnn_adv"] = 0.4321  # crafted on cnn, scored on cnn_adv
    success["targeted"]["cnn_adv"]["cnn"] = 0.1234  # the other way round
    judges = {
        "seeded": {
            m: {
                "knn_accuracy": s(),
                "nearest_l2": 5 + s(),
                "cross_model": s(),
                "seed_knn_accuracy": s(),
                "seed_nearest_l2": 6 + s(),
            }
            for m in MODEL_NAMES
        },
        "from_noise": {
            m: {"knn_accuracy": s(), "nearest_l2": 7 + s(), "cross_model": s()} for m in MODEL_NAMES
        },
    }
    out["transfer"] = {
        "models": list(MODEL_NAMES),
        "pgd_eps": 0.1,
        "success": success,
        "class_image_judges": judges,
    }
    out["compare"] = {"min_eps_median": {m: s() for m in MODEL_NAMES}}
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


def registry_figures() -> dict[str, tuple[str, str | None]]:
    """Every figure the registry names, for every item: ``{plots-relative path: (kind,
    model or None)}``; a glob pattern is stood for by one name that matches it."""
    out: dict[str, tuple[str, str | None]] = {}
    for kind, patterns in FIGURES.items():
        stage = kind.split("/")[0]
        if kind in ("transfer", "compare"):
            items: list[tuple[str | None, str | None]] = [(None, None)]
        elif kind.startswith("attack/"):
            items = [(f"{kind.split('/')[1]}-{m}", m) for m in MODEL_NAMES]
        else:
            items = [(m, m) for m in MODEL_NAMES]
        for item, model in items:
            for pattern in patterns:
                folder = stage if item is None else f"{stage}/{item}"
                out[f"{folder}/{pattern.replace('*', '3')}.png"] = (kind, model)
    return out


def write_inputs(root: Path, metrics: dict[str, Any]) -> tuple[Path, Path]:
    metrics_dir, plots = root / "metrics", root / "plots"
    for rel, data in metrics.items():
        path = metrics_dir / f"{rel}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    for rel in registry_figures():
        path = plots / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(rel))
    return metrics_dir, plots


def uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], Path]:
    """The page rendered from the sentinel metrics files, the metrics, the plots dir."""
    metrics_dir, plots = write_inputs(tmp_path_factory.mktemp("report"), sentinel_metrics())
    metrics = report.load_metrics(metrics_dir)
    return report.render(metrics, plots), metrics, plots


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

    walk({k: v for k, v in sentinel_metrics().items() if not k.startswith("architecture")})
    leaves = [v for v in leaves if v not in (0.5, 0.1)]  # min_eps.hi, transfer.pgd_eps
    assert len(leaves) == len(set(leaves)) > 150


def test_page_shows_each_number_in_its_models_row(rendered) -> None:
    html, metrics, _ = rendered
    assert missing_numbers(html, metrics) == []
    assert len(expected_rows(metrics)) >= 40  # 8 rows per model, 12 transfer rows, ...


def test_page_shows_the_sentinels_formatted_as_percentages(rendered) -> None:
    """The same check without the helper's formatting: literal strings."""
    page = Page(rendered[0])
    part1 = page.table("test accuracy (ours)")
    assert {r[0]: r[1] for r in part1.rows} == {
        "plain CNN": "91.23%",
        "CNN + BatchNorm": "95.68%",
        "adversarially trained CNN": "93.46%",
    }
    targeted = {r[0]: r[1:] for r in page.table("crafted on \\ scored on", "targeted").rows}
    assert targeted["cnn"][2] == "43.21%"  # row: crafted on cnn; column: scored on cnn_adv
    assert targeted["cnn_adv"][0] == "12.34%"
    strong = {r[0]: r[-1] for r in page.table("median minimal eps").rows}
    assert strong["adversarially trained CNN"] == "– (> 0.5)"
    counts = {r[0]: r[1] for r in page.table("ours (from the modules)").rows}
    assert counts["total parameters"] == "123,456"  # the plain CNN's, not another model's


def test_swapped_metrics_files_are_caught(rendered, tmp_path: Path) -> None:
    """A page that reads cnn's numbers from cnn_bn's files (and back) does not pass."""
    _, metrics, plots = rendered
    swapped = dict(metrics)
    for a, b in (
        ("evaluate/cnn", "evaluate/cnn_bn"),
        ("attack/strong-cnn", "attack/strong-cnn_bn"),
    ):
        swapped[a], swapped[b] = metrics[b], metrics[a]
    problems = missing_numbers(report.render(swapped, plots), metrics)
    assert len(problems) == 4  # two rows of two tables
    transposed = json.loads(json.dumps(metrics))
    t = transposed["transfer"]["success"]["targeted"]
    transposed["transfer"]["success"]["targeted"] = {
        src: {dst: t[dst][src] for dst in MODEL_NAMES} for src in MODEL_NAMES
    }
    problems = missing_numbers(report.render(transposed, plots), metrics)
    assert len(problems) == 3 and all("(targeted)" in p for p in problems)  # its 3 rows


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
            assert where[uri(plots / rel)] == report.LABELS[model], rel
            checked += 1
    assert checked == 3 * sum(len(FIGURES[k]) for k in SECTIONED)


def test_missing_figure_or_metrics_file_fails_the_page(rendered, tmp_path: Path) -> None:
    _, metrics, plots = rendered
    copy = tmp_path / "plots"
    shutil.copytree(plots, copy)
    (copy / "evaluate/cnn_bn/confusion.png").unlink()
    with pytest.raises(report.ReportError, match="evaluate/cnn_bn/confusion.png"):
        report.render(metrics, copy)
    with pytest.raises(report.ReportError, match="metrics/transfer.json"):
        report.render({k: v for k, v in metrics.items() if k != "transfer"}, plots)


def test_missing_globbed_figure_fails_the_page(rendered, tmp_path: Path) -> None:
    _, metrics, plots = rendered
    copy = tmp_path / "plots"
    shutil.copytree(plots, copy)
    (copy / "attack/noise-cnn_bn/noise_transfer.png").unlink()
    with pytest.raises(report.ReportError, match="noise_transfer"):
        report.render(metrics, copy)
