"""One self-contained HTML page answering the study's questions, our numbers beside the
reference report's. Images are embedded (base64), so the page works anywhere alone.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mnistlab.core.config import MODEL_NAMES

# What the reference course report measured (EE6132 assignment 2, 2019).
REFERENCE = {
    "test_accuracy": {"cnn": 0.9796, "cnn_bn": 0.9923},
    "total_params": 799_078,
    "conv_params": 9_568,
    "fc_params": 789_510,
    "total_neurons": 574,
    "bn_time_ratio": 2.0,
    "class_model_confidence": 1.0,
    "targeted_confidence": 1.0,
}

LABELS = {"cnn": "plain CNN", "cnn_bn": "CNN + BatchNorm"}

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.q { color: #555; font-style: italic; }
nav a { margin-right: 1em; }
"""


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _num(x: float | int | None) -> str:
    if x is None:
        return "–"
    return f"{x:,}" if isinstance(x, int) else f"{x:.3g}"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: Path, caption: str) -> str:
    if not path.is_file():
        return f"<p><em>missing figure: {html.escape(str(path))}</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)} <code>({html.escape(path.name)})</code>"
        "</figcaption></figure>"
    )


def load_metrics(metrics_dir: Path) -> dict[str, Any]:
    """Every metrics JSON under ``metrics_dir``, keyed by relative path without suffix."""
    return {
        str(p.relative_to(metrics_dir).with_suffix("")): json.loads(p.read_text())
        for p in sorted(metrics_dir.rglob("*.json"))
    }


def build(metrics: dict[str, Any], plots: Path) -> str:
    """The report page for ``metrics`` (from :func:`load_metrics`) and the figures in ``plots``."""
    m = metrics
    parts: list[str] = []

    def get(key: str, *path: str) -> Any:
        node = m.get(key, {})
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        return node

    # ---- Part 1
    parts.append(
        '<h2 id="part1">Part 1: classifying MNIST with a CNN, with and without BatchNorm</h2>'
    )
    parts.append(
        '<p class="q">Train the CNN; plot training/validation error and validation '
        "accuracy; report test accuracy; show 6 random predictions; give layer shapes, "
        "parameters and neurons; compare with BatchNorm.</p>"
    )
    rows = []
    for name in MODEL_NAMES:
        rows.append(
            [
                LABELS[name],
                _pct(get(f"evaluate/{name}", "test_accuracy")),
                _pct(REFERENCE["test_accuracy"][name]),
                _pct(get(f"train/{name}", "val_accuracy")),
                _num(get(f"train/{name}", "train_seconds")),
            ]
        )
    parts.append(
        _table(
            [
                "model",
                "test accuracy (ours)",
                "test accuracy (reference)",
                "validation accuracy",
                "training seconds",
            ],
            rows,
        )
    )
    t_cnn, t_bn = get("train/cnn", "train_seconds"), get("train/cnn_bn", "train_seconds")
    if t_cnn and t_bn:
        parts.append(
            f"<p>BatchNorm training time: {t_bn / t_cnn:.2f}x the plain CNN's "
            f"(reference: ~{REFERENCE['bn_time_ratio']:.0f}x).</p>"
        )
    for name in MODEL_NAMES:
        parts.append(f"<h3>{LABELS[name]}</h3>")
        parts.append(
            _figure(
                plots / "train" / name / "loss_curves.png",
                "training and validation loss vs iterations",
            )
        )
        parts.append(
            _figure(plots / "train" / name / "val_accuracy.png", "validation accuracy vs epochs")
        )
        samples = get(f"evaluate/{name}", "samples") or []
        parts.append(
            _figure(
                plots / "evaluate" / name / "samples.png",
                "6 random test images: true labels "
                f"{[s['true'] for s in samples]}, predicted "
                f"{[s['predicted'] for s in samples]}",
            )
        )
        parts.append(_figure(plots / "evaluate" / name / "confusion.png", "confusion matrix"))
        parts.append(
            _figure(plots / "evaluate" / name / "misclassified.png", "most confident mistakes")
        )
    arch = get("architecture/cnn")
    if arch:
        parts.append("<h3>Layer shapes, parameters and neurons (plain CNN)</h3>")
        parts.append(
            _table(
                ["layer", "input", "output", "weights", "biases", "parameters", "neurons"],
                [
                    [
                        la["name"],
                        " x ".join(map(str, la["input_shape"])),
                        " x ".join(map(str, la["output_shape"])),
                        _num(la["weights"]),
                        _num(la["biases"]),
                        _num(la["params"]),
                        _num(la["neurons"]),
                    ]
                    for la in arch["layers"]
                ],
            )
        )
        parts.append(
            _table(
                ["count", "ours (from the modules)", "reference"],
                [
                    [
                        "total parameters",
                        _num(arch["total_params"]),
                        _num(REFERENCE["total_params"]),
                    ],
                    ["conv parameters", _num(arch["conv_params"]), _num(REFERENCE["conv_params"])],
                    ["FC parameters", _num(arch["fc_params"]), _num(REFERENCE["fc_params"])],
                    ["neurons", _num(arch["total_neurons"]), _num(REFERENCE["total_neurons"])],
                ],
            )
        )

    # ---- Part 2
    parts.append('<h2 id="part2">Part 2: visualising the CNN</h2>')
    parts.append(
        '<p class="q">Plot conv1 and conv2 filters, the activations of both layers '
        "for a random input, and the probability of the true class as a grey patch "
        "occludes each position.</p>"
    )
    for name in MODEL_NAMES:
        parts.append(f"<h3>{LABELS[name]}</h3>")
        d = plots / "visualize" / name
        for file, cap in [
            ("conv1_filters.png", "conv1 filters"),
            ("conv2_filters_channel0.png", "conv2 filters, input channel 0"),
            ("conv2_filters_all.png", "all conv2 filters"),
            ("activations.png", "conv1 and conv2 activations"),
            ("occlusion.png", "occlusion maps (black P=0, white P=1)"),
        ]:
            parts.append(_figure(d / file, cap))
        occ = get(f"visualize/{name}", "occlusion")
        if occ:
            parts.append(
                _table(
                    [
                        "test image",
                        "label",
                        "P(true), clean",
                        "lowest P(true)",
                        "at (row, col)",
                        "predicted there",
                    ],
                    [
                        [
                            i["index"],
                            i["label"],
                            f"{i['base_prob']:.3f}",
                            f"{i['min_prob']:.3f}",
                            tuple(i["min_at"]),
                            i["predicted_at_min"],
                        ]
                        for i in occ["images"]
                    ],
                )
            )

    # ---- Part 3
    parts.append('<h2 id="part3">Part 3: adversarial examples</h2>')
    rows = []
    for name in MODEL_NAMES:
        cm = get(f"attack/class_model-{name}")
        tg = get(f"attack/targeted-{name}")
        nz = get(f"attack/noise-{name}")
        rows.append(
            [
                LABELS[name],
                _pct(cm and cm.get("success_rate")),
                _pct(cm and cm.get("mean_confidence")),
                _pct(tg and tg.get("success_rate")),
                _pct(tg and tg.get("mean_confidence")),
                _pct(nz and nz.get("success_rate")),
                _pct(nz and nz.get("mean_confidence")),
            ]
        )
    rows.append(
        [
            "reference report",
            "100.00%",
            _pct(REFERENCE["class_model_confidence"]),
            "100.00%",
            _pct(REFERENCE["targeted_confidence"]),
            "100.00%",
            "~98%",
        ]
    )
    parts.append(
        _table(
            [
                "model",
                "class model: success",
                "confidence",
                "targeted: success",
                "confidence",
                "noise: success",
                "confidence",
            ],
            rows,
        )
    )
    for name in MODEL_NAMES:
        parts.append(f"<h3>{LABELS[name]}</h3>")
        base = plots / "attack"
        parts.append(
            _figure(
                base / f"class_model-{name}" / "class_images.png",
                "images grown from noise into each class",
            )
        )
        parts.append(
            _figure(base / f"class_model-{name}" / "class_cost.png", "target logit vs iteration")
        )
        for png in sorted((base / f"targeted-{name}").glob("targeted_images_*.png")):
            parts.append(_figure(png, f"targeted attack, target {png.stem.rsplit('_', 1)[-1]}"))
        for png in sorted((base / f"noise-{name}").glob("noise_*.png")):
            parts.append(_figure(png, png.stem.replace("_", " ")))
        nz = get(f"attack/noise-{name}", "transfer")
        if nz:
            parts.append(
                f"<p>Noise transfer: {_pct(nz['same_class_rate'])} of the noises move "
                f"other images of the same class to their target; "
                f"{_pct(nz['other_class_rate'])} for images of other classes.</p>"
            )
    parts.append("<h3>Robustness: FGSM and PGD</h3>")
    eps_rows = []
    for form in ("fgsm", "pgd"):
        for name in MODEL_NAMES:
            ra = get(f"attack/{form}-{name}", "robust_accuracy") or {}
            eps_rows.append([f"{form.upper()} {name}", *(_pct(v) for v in ra.values())])
    eps_header = list((get("attack/pgd-cnn", "robust_accuracy") or {}).keys())
    parts.append(_table(["attack, model", *[f"eps {e}" for e in eps_header]], eps_rows))
    for form in ("fgsm", "pgd"):
        for name in MODEL_NAMES:
            parts.append(
                _figure(
                    plots / "attack" / f"{form}-{name}" / "robustness.png",
                    f"{form.upper()} robust accuracy, {name}",
                )
            )
    tr = get("transfer", "success")
    if tr:
        parts.append("<h3>Transfer between the two models</h3>")
        parts.append(
            "<p>Success rate of examples crafted on the row's model when scored on "
            "the column's model.</p>"
        )
        for form, mat in tr.items():
            parts.append(f"<h4>{form}</h4>")
            parts.append(
                _table(
                    ["crafted on \\ scored on", *MODEL_NAMES],
                    [[src, *(_pct(v) for v in row.values())] for src, row in mat.items()],
                )
            )
        parts.append(_figure(plots / "transfer" / "transfer_matrix.png", "transfer matrix"))

    nav = (
        '<nav><a href="#part1">Part 1: classification</a><a href="#part2">Part 2: '
        'visualisation</a><a href="#part3">Part 3: adversarial examples</a></nav>'
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>mnistlab report</title>"
        f"<style>{CSS}</style></head><body><h1>mnistlab: the study, answered</h1>"
        "<p>Every number below comes from this pipeline's metrics files; the reference "
        "report's numbers stand beside ours.</p>"
        f"{nav}{''.join(parts)}</body></html>\n"
    )
