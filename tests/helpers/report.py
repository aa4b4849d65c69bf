"""What the report page must show for a set of metrics, checked against the page's own tables.

:func:`missing_numbers` lists, for the metrics a page was rendered from, each headline
number (formatted as the report formats it) that is not where it belongs: in the row of
the right model (or the right source model, for the transfer matrices), in the right
table. The report's unit tests use it on a page rendered from sentinel metrics, the
pipeline test on the built page against that build's ``metrics/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from mnistlab.core.params_types import MODEL_NAMES
from mnistlab.report import LABELS, REFERENCE, num, pct

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


# A place on the page: (a cell of the table's header row, the heading it sits under or
# None, the first cell of the row), and the cells that row must hold after its first.
Expected = dict[tuple[str, str | None, str], list[str]]


def expected_rows(m: dict[str, Any], models: tuple[str, ...] = MODEL_NAMES) -> Expected:
    """Each table row the report must show for metrics ``m`` (``report.load_metrics``)."""
    rows: Expected = {}
    for name in models:
        label = LABELS[name]
        ev, tr = m[f"evaluate/{name}"], m[f"train/{name}"]
        rows["test accuracy (ours)", None, label] = [
            pct(ev["test_accuracy"]),
            pct(REFERENCE["test_accuracy"].get(name)),
            pct(tr["val_accuracy"]),
            num(tr["train_seconds"], 4),
        ]
        rates = [m[f"attack/{form}-{name}"] for form in ("class_model", "targeted", "noise")]
        rows["class model: success", None, label] = [
            pct(r[key]) for r in rates for key in ("success_rate", "mean_confidence")
        ]
        pgd_eps = list(m["attack/pgd-cnn"]["robust_accuracy"])  # the columns of that table
        for form in ("fgsm", "pgd"):
            acc = m[f"attack/{form}-{name}"]["robust_accuracy"]
            rows["attack, model", None, f"{form.upper()} {name}"] = [
                pct(acc.get(e)) for e in pgd_eps
            ]
        s = m[f"attack/strong-{name}"]
        ra, median = s["robust_accuracy"], s["min_eps"]["median"]
        strong_eps = list(m["attack/strong-cnn"]["robust_accuracy"]["strong"])
        rows["clean", None, label] = [
            pct(s["clean_accuracy"]),
            *(pct(ra[kind][e]) for e in strong_eps for kind in ("pgd", "strong", "gap")),
            num(median) + ("" if median is not None else f" (> {s['min_eps']['hi']})"),
        ]
        a = m[f"attribution/{name}"]
        vs = a["trusted_deletion_auc_vs_random"]
        rows["trusted method", None, label] = [
            (a["trusted_method"] or "none passes").replace("_", " "),
            num(a["trusted_deletion_auc"]),
            "–" if vs is None else f"{vs:.2f}x",
            *(
                f"{a['best_method'][f].replace('_', ' ')}: {best:.2f}x"
                for f, best in a["best_deletion_auc_vs_random"].items()
            ),
        ]
        methods = [*sorted(a["ranking"][a["trusted_fill"]]), "random"]
        for fill in a["fills"]:
            rows[f"model, {fill} fill", None, label] = [
                f"{a['deletion_auc'][fill][me]:.3f}" for me in methods
            ]
        judges = m["transfer"]["class_image_judges"]
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
    for form, matrix in m["transfer"]["success"].items():
        for src in models:  # rows: crafted on; columns: scored on
            rows["crafted on \\ scored on", form, src] = [pct(matrix[src][d]) for d in models]
    adv = m["attack/strong-cnn_adv"]["robust_accuracy"]["strong"].get("0.3")
    rows["robust accuracy, eps 0.3", None, f"ours: {LABELS['cnn_adv']}, strong ensemble"] = [
        pct(adv)
    ]
    arch = m["architecture/cnn"]
    for label, key in (
        ("total parameters", "total_params"),
        ("conv parameters", "conv_params"),
        ("FC parameters", "fc_params"),
        ("neurons", "total_neurons"),
    ):
        rows["ours (from the modules)", None, label] = [num(arch[key]), num(REFERENCE[key])]
    return rows


def expected_sentences(m: dict[str, Any], models: tuple[str, ...] = MODEL_NAMES) -> list[str]:
    """Sentences of the report's prose, with this run's numbers, in the page's order."""
    t = {name: m[f"train/{name}"]["train_seconds"] for name in models}
    out = [
        f"BatchNorm training time: {t['cnn_bn'] / t['cnn']:.2f}x the plain CNN's",
        f"costs {t['cnn_adv'] / t['cnn']:.1f}x the plain CNN's time",
    ]
    for name in models:
        tr = m[f"attack/noise-{name}"]["transfer"]
        out.append(
            f"Noise transfer: {pct(tr['same_class_rate'])} of the noises move other images"
            f" of the same class to their target; {pct(tr['other_class_rate'])} for images"
            " of other classes."
        )
    return out


def missing_numbers(html: str, metrics: dict[str, Any]) -> list[str]:
    """What the page for ``metrics`` fails to show where it should; empty when all is there.

    Each expected row must appear exactly once in its table, with exactly the expected
    cells; the prose's sentences must appear in order.
    """
    page = Page(html)
    problems = []
    for (header_cell, heading, first), cells in expected_rows(metrics).items():
        table = page.table(header_cell, heading)
        found = [r[1:] for r in table.rows if r and r[0] == first]
        if found != [cells]:
            problems.append(f"table {header_cell!r} ({heading}), row {first!r}: {found} != {cells}")
    at = 0
    for sentence in expected_sentences(metrics):
        hit = page.text.find(sentence, at)
        if hit < 0:
            problems.append(f"sentence not found (after position {at}): {sentence!r}")
        else:
            at = hit + len(sentence)
    return problems
