"""What the report page must show for a set of metrics, checked against the page's own tables.

:func:`missing_numbers` lists, for the metrics a page was rendered from, each headline
number (formatted as the report formats it) that is not where it belongs: in the row of
the right model (or the right source model, for the transfer matrices), in the right
table. The report's unit tests use it on a page rendered from sentinel metrics, the
pipeline test on the built page against that build's ``metrics/``.

The study is whatever the page was rendered for: its models, their labels and its attack
forms are given (:class:`Study`), or read back from the metrics and ``params.yaml``
(:func:`study_of`) for a page built by the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from helpers.params import raw_params
from mnistlab.report import (
    REFERENCE,
    attribution_methods,
    curve_forms,
    form_table,
    num,
    pct,
    success_forms,
)

HEADINGS = ("h1", "h2", "h3", "h4")


def _clean(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Table:
    heading: str  # the text of the last heading before the table
    header: list[str] = field(default_factory=list)  # the cells of its first row
    rows: list[list[str]] = field(default_factory=list)  # the other rows' cells


@dataclass
class Image:
    heading: str  # the text of the last h2/h3 before the image
    src: str


class Page(HTMLParser):
    """The tables, images and whitespace-normalised text of an HTML page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[Table] = []
        self.images: list[Image] = []
        self._heading = ""
        self._section = ""  # the last h2 or h3
        self._text: list[str] = []
        self._buf: list[str] | None = None  # the heading or cell being read
        self._row: list[str] | None = None
        self.feed(html)
        self.close()
        self.text = _clean(" ".join(self._text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in HEADINGS or tag in ("td", "th"):
            self._buf = []
        elif tag == "table":
            self.tables.append(Table(self._heading))
        elif tag == "tr":
            self._row = []
        elif tag == "img":
            self.images.append(Image(self._section, dict(attrs).get("src") or ""))

    def handle_endtag(self, tag: str) -> None:
        if tag in HEADINGS and self._buf is not None:
            self._heading = _clean("".join(self._buf))
            if tag in ("h2", "h3"):
                self._section = self._heading
            self._buf = None
        elif tag in ("td", "th") and self._buf is not None and self._row is not None:
            self._row.append(_clean("".join(self._buf)))
            self._buf = None
        elif tag == "tr" and self._row is not None and self.tables:
            table = self.tables[-1]
            if table.header:
                table.rows.append(self._row)
            else:
                table.header = self._row
            self._row = None

    def handle_data(self, data: str) -> None:
        self._text.append(data)
        if self._buf is not None:
            self._buf.append(data)

    def table(self, header_cell: str, heading: str | None = None) -> Table:
        """The one table whose first row has ``header_cell`` (and under ``heading``)."""
        found = [
            t
            for t in self.tables
            if header_cell in t.header and (heading is None or t.heading == heading)
        ]
        assert len(found) == 1, f"{len(found)} tables with {header_cell!r} under {heading!r}"
        return found[0]


@dataclass(frozen=True)
class Study:
    """What a page was rendered for: ``report.render``'s ``models``, ``labels``, ``forms``."""

    models: tuple[str, ...]
    labels: dict[str, str]
    forms: tuple[str, ...]


def study_of(m: dict[str, Any]) -> Study:
    """The study of a built pipeline's metrics: its models (the transfer stage's order), their
    labels and the attack forms from ``params.yaml`` (the repo's: a build copies it)."""
    raw = raw_params()
    models = tuple(m["transfer"]["models"])
    entries = raw["models"]
    labels = {n: (entries.get(n) or {}).get("label") or n for n in models}
    forms = tuple(f for f in raw["attacks"] if f"attack/{f}-{models[0]}" in m)
    return Study(models, labels, forms)


# A place on the page: (a cell of the table's header row, the heading it sits under or
# None, the first cell of the row), and the cells that row must hold after its first.
Expected = dict[tuple[str, str | None, str], list[str]]


def not_applicable(stage: dict[str, Any], key: str) -> str:
    why = stage.get("not_applicable", {}).get(key, "not computed for this model")
    return f"not applicable: {why}"


def _attacks(m: dict[str, Any], study: Study) -> Expected:
    """The forms with a success rate and a confidence, the robust accuracy curves and the
    strong ensemble, per model."""
    rows: Expected = {}
    first = study.models[0]
    asked = success_forms(m, study.forms, study.models)
    curves = curve_forms(study.forms)
    for name in study.models:
        label = study.labels[name]
        if asked:
            rates = [m[f"attack/{form}-{name}"] for form in asked]
            header = f"{asked[0].replace('_', ' ')}: success"
            rows[header, None, label] = [
                pct(r[key]) for r in rates for key in ("success_rate", "mean_confidence")
            ]
        if curves:
            grid = "pgd" if "pgd" in curves else curves[0]
            eps = list(m[f"attack/{grid}-{first}"]["robust_accuracy"])  # the table's columns
            for form in curves:
                acc = m[f"attack/{form}-{name}"]["robust_accuracy"]
                rows["attack, model", None, f"{form.upper()} {name}"] = [
                    pct(acc.get(e)) for e in eps
                ]
        if "strong" in study.forms:
            s = m[f"attack/strong-{name}"]
            ra, median = s["robust_accuracy"], s["min_eps"]["median"]
            strong_eps = list(m[f"attack/strong-{first}"]["robust_accuracy"]["strong"])
            std = s.get("standard", {}).get("robust_accuracy", {})
            std_eps = list(
                m[f"attack/strong-{first}"].get("standard", {}).get("robust_accuracy", {})
            )
            rows["clean", None, label] = [
                pct(s["clean_accuracy"]),
                *(pct(ra[kind][e]) for e in strong_eps for kind in ("pgd", "strong", "gap")),
                *(pct(std.get(e)) for e in std_eps),
                num(median) + ("" if median is not None else f" (> {s['min_eps']['hi']})"),
            ]
            # beside AutoAttack's table: its standard budget where it ran, else the ensemble
            if std.get("0.3") is not None:
                rows[
                    "robust accuracy, eps 0.3", None, f"ours: {label}, AutoAttack's standard budget"
                ] = [pct(std["0.3"])]
            else:
                rows["robust accuracy, eps 0.3", None, f"ours: {label}, strong ensemble"] = [
                    pct(ra["strong"].get("0.3"))
                ]
    return rows


def _attribution(m: dict[str, Any], study: Study) -> Expected:
    """The trust, deletion and sanity tables: a method a model lacks says why."""
    rows: Expected = {}
    methods = attribution_methods(m, study.models)
    fills = m[f"attribution/{study.models[0]}"]["fills"]
    for name in study.models:
        label, a = study.labels[name], m[f"attribution/{name}"]
        vs = a["trusted_deletion_auc_vs_random"]
        rows["trusted method", None, label] = [
            (a["trusted_method"] or "none passes").replace("_", " "),
            num(a["trusted_deletion_auc"]),
            "–" if vs is None else f"{vs:.2f}x",
            *(
                f"{a['best_method'][f].replace('_', ' ')}: "
                f"{a['best_deletion_auc_vs_random'][f]:.2f}x"
                for f in fills
            ),
        ]
        for fill in fills:
            rows[f"model, {fill} fill", None, label] = [
                not_applicable(a, me)
                if a["deletion_auc"][fill].get(me) is None
                else f"{a['deletion_auc'][fill][me]:.3f}"
                for me in [*methods, "random"]
            ]
        last = list(a["sanity_spearman"])[-1]
        header = f"Spearman after randomising every layer: {methods[0].replace('_', ' ')}"
        rows[header, None, label] = [
            not_applicable(a, me)
            if me not in a["sanity_passes"]
            else _sanity_cell(a["sanity_spearman"][last].get(me), a["sanity_passes"][me])
            for me in methods
        ]
    return rows


def _sanity_cell(rho: float | None, passes: bool) -> str:
    return f"{'–' if rho is None else f'{rho:.2f}'} ({'passes' if passes else 'fails'})"


def expected_rows(m: dict[str, Any], study: Study | None = None) -> Expected:
    """Each table row the report must show for metrics ``m`` (``report.load_metrics``)."""
    study = study or study_of(m)
    rows: Expected = {**_attacks(m, study), **_attribution(m, study)}
    judges = m["transfer"].get("class_image_judges")
    for name in study.models:
        label = study.labels[name]
        ev, tr = m[f"evaluate/{name}"], m[f"train/{name}"]
        rows["test accuracy (ours)", None, label] = [
            pct(ev["test_accuracy"]),
            pct(REFERENCE["test_accuracy"].get(name)),
            pct(tr["val_accuracy"]),
            num(tr["train_seconds"], 4),
        ]
        if judges:
            sj, nj = judges["seeded"][name], judges["from_noise"][name]
            rows["kNN judge: read as intended", None, label] = [
                pct(sj["knn_accuracy"]),
                f"{sj['nearest_l2']:.2f} ({sj['seed_nearest_l2']:.2f})",
                pct(sj["cross_model"]),
                pct(nj["knn_accuracy"]),
                f"{nj['nearest_l2']:.2f}",
                pct(nj["cross_model"]),
            ]
        for i in m[f"visualize/{name}"]["occlusion"]["images"]:
            rows["lowest P(true)", label, str(i["index"])] = [
                str(i["label"]),
                f"{i['base_prob']:.3f}",
                f"{i['min_prob']:.3f}",
                "(" + ", ".join(str(v) for v in i["min_at"]) + ")",
                str(i["predicted_at_min"]),
            ]
        arch = m[f"architecture/{name}"]
        for count, key in (
            ("total parameters", "total_params"),
            ("conv parameters", "conv_params"),
            ("FC parameters", "fc_params"),
            ("neurons", "total_neurons"),
        ):
            rows["ours (from the modules)", f"{label}: layers", count] = [
                num(arch.get(key)),
                num(REFERENCE[key]),
            ]
    for form, matrix in m["transfer"]["success"].items():
        for src in study.models:  # rows: crafted on; columns: scored on
            rows["crafted on \\ scored on", form, src] = [
                pct(matrix[src].get(d)) for d in study.models
            ]
    for form in study.forms:
        columns, table = form_table(m, form, study.models)
        for name in study.models if columns else ():
            rows[f"{form}: model", form, study.labels[name]] = [
                num(table[name].get(c), 4) for c in columns
            ]
    return rows


def expected_sentences(m: dict[str, Any], study: Study | None = None) -> list[str]:
    """Sentences of the report's prose, with this run's numbers, in the page's order. The
    reference report's BatchNorm comparison names its models: there only when they are."""
    study = study or study_of(m)
    out = []
    if "cnn" in study.models and "cnn_bn" in study.models:
        t = {name: m[f"train/{name}"]["train_seconds"] for name in study.models}
        out.append(f"BatchNorm training time: {t['cnn_bn'] / t['cnn']:.2f}x the plain CNN's")
        if "cnn_adv" in study.models:
            out.append(f"costs {t['cnn_adv'] / t['cnn']:.1f}x the plain CNN's time")
    if "noise" in study.forms:
        for name in study.models:
            tr = m[f"attack/noise-{name}"]["transfer"]
            out.append(
                f"Noise transfer: {pct(tr['same_class_rate'])} of the noises move other images"
                f" of the same class to their target; {pct(tr['other_class_rate'])} for images"
                " of other classes."
            )
    return out


def missing_numbers(html: str, metrics: dict[str, Any], study: Study | None = None) -> list[str]:
    """What the page for ``metrics`` fails to show where it should; empty when all is there.

    Each expected row must appear exactly once in its table, with exactly the expected
    cells; the prose's sentences must appear in order. ``study``: what the page was
    rendered for (default: :func:`study_of` the metrics).
    """
    page = Page(html)
    problems = []
    for (header_cell, heading, first), cells in expected_rows(metrics, study).items():
        table = page.table(header_cell, heading)
        found = [r[1:] for r in table.rows if r and r[0] == first]
        if found != [cells]:
            problems.append(f"table {header_cell!r} ({heading}), row {first!r}: {found} != {cells}")
    at = 0
    for sentence in expected_sentences(metrics, study):
        hit = page.text.find(sentence, at)
        if hit < 0:
            problems.append(f"sentence not found (after position {at}): {sentence!r}")
        else:
            at = hit + len(sentence)
    return problems
