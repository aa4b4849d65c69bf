"""The Pareto front of a sweep: training minutes against robust accuracy, clean beside.

`python -m ops.pareto sweeps/results/robust.json` prints a markdown table of every landed
variant of a sweep's committed results (``make sweep`` writes them), fastest first, with
the variants no other beats on both axes (as fast or faster and as robust or more, one
of them strictly) marked as the front. ``--write README.md BENCHMARKS.md bench/notes.md``
(BENCHMARKS.md's reading is rendered from bench/notes.md) puts it
between the files' ``<!-- pareto: <sweep> begin ... -->`` and ``<!-- pareto: <sweep> end
-->`` markers; ``tests/test_sweep.py`` fails when a committed table and the committed
results disagree.

The axes are metrics every variant's pipeline writes (``ops.sweep.headline``):
``train_minutes.<model>`` (its ``train@<model>`` run), ``robust_accuracy.standard.
<model>.0.3`` (``attack@strong-<model>`` at AutoAttack's standard budget) and
``test_accuracy.<model>`` (``evaluate@<model>`` on the 10,000 test images).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MODEL = "cnn_adv"


def axes(model: str = MODEL) -> dict[str, str]:
    """The metrics read, by role."""
    return {
        "minutes": f"train_minutes.{model}",
        "robust": f"robust_accuracy.standard.{model}.0.3",
        "clean": f"test_accuracy.{model}",
    }


def points(results: list[dict[str, Any]], model: str = MODEL) -> list[dict[str, Any]]:
    """The landed variants that have every axis, fastest first (then the more robust)."""
    keys = axes(model)
    out = []
    for r in results:
        m = r.get("metrics", {})
        if r.get("status") in ("done", "skipped") and all(k in m for k in keys.values()):
            out.append(
                {"name": r["name"], "overrides": r["overrides"]}
                | {role: float(m[key]) for role, key in keys.items()}
            )
    return sorted(out, key=lambda p: (p["minutes"], -p["robust"]))


def front(pts: list[dict[str, Any]]) -> set[str]:
    """The names of the points no other point dominates (no slower, no less robust, and
    better on one)."""

    def beats(a: dict[str, Any], b: dict[str, Any]) -> bool:
        no_worse = a["minutes"] <= b["minutes"] and a["robust"] >= b["robust"]
        return no_worse and (a["minutes"] < b["minutes"] or a["robust"] > b["robust"])

    return {p["name"] for p in pts if not any(beats(q, p) for q in pts)}


def _recipe(overrides: dict[str, Any], model: str) -> str:
    prefix = f"models.{model}."
    parts = []
    for key, value in overrides.items():
        if key.startswith(prefix):
            parts.append(f"{key.removeprefix(prefix).removeprefix('adversarial.')} {value}")
    return ", ".join(parts) or "the defaults"


def table(results: list[dict[str, Any]], model: str = MODEL) -> str:
    """The markdown table: a row per variant, fastest first; the front in bold."""
    pts = points(results, model)
    best = front(pts)
    lines = [
        f"| `{model}` recipe | training minutes | robust, eps 0.3, standard budget "
        "| clean (10k test) | on the front |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for p in pts:
        on = p["name"] in best
        cells = [
            _recipe(p["overrides"], model),
            f"{p['minutes']:.1f}",
            f"{100 * p['robust']:.1f}%",
            f"{100 * p['clean']:.2f}%",
            "yes" if on else "",
        ]
        if on:
            cells[:4] = [f"**{c}**" for c in cells[:4]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markers(sweep: str) -> tuple[str, str]:
    return (
        f"<!-- pareto: {sweep} begin "
        f"(python -m ops.pareto sweeps/results/{sweep}.json --write README.md BENCHMARKS.md "
        "bench/notes.md) -->",
        f"<!-- pareto: {sweep} end -->",
    )


def block(text: str, sweep: str) -> str:
    """The table between ``text``'s markers for ``sweep``.

    Raises:
        ValueError: a marker is missing.
    """
    begin, end = markers(sweep)
    if begin not in text or end not in text:
        raise ValueError(f"no {begin!r} ... {end!r} markers")
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "results", type=Path, help="a sweep's results, e.g. sweeps/results/robust.json"
    )
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--write", nargs="+", type=Path, default=[], metavar="FILE")
    args = parser.parse_args(argv)
    sweep = args.results.stem
    text = table(json.loads(args.results.read_text()), args.model)
    if not args.write:
        sys.stdout.write(text + "\n")
        return 0
    begin, end = markers(sweep)
    for path in args.write:
        doc = path.read_text()
        try:
            block(doc, sweep)
        except ValueError as err:
            sys.stderr.write(f"{path}: {err}\n")
            return 2
        head, rest = doc.split(begin, 1)
        path.write_text(f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
