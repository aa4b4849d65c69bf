"""README's results table, rendered from the committed metrics.

`python -m ops.results` prints the table that README.md's "Results at the default
params" section holds between its two marker comments; `python -m ops.results --write`
puts it there. Both read the workspace's `metrics/`, or with `--rev REV` the metrics
committed at git revision REV. `tests/test_results.py` fails when the README's table and
the metrics committed at HEAD disagree, so the numbers a reader sees are the ones the
committed `dvc repro` wrote, whatever a later `make repro` on another CPU left in the
workspace (its numbers move within noise).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _models() -> tuple[str, ...]:
    """params.yaml's models, in its order: the table's columns."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    return tuple(yaml.safe_load((root / "params.yaml").read_text())["models"])


MODELS = _models()
BEGIN = "<!-- results: begin (python -m ops.results --write) -->"
END = "<!-- results: end -->"
REFERENCE = {  # the course report's own figures, for the last column
    "test accuracy": "97.96% / 99.23% / -",
    "parameters / neurons": "799,078 / 574",
    "class images from noise: success (mean confidence)": "100% (100%)",
    "targeted attack / learned noise: success": "100% / 100%",
    "training time": 'BN "about 2x"',
}
Metrics = dict[str, Any]
Loader = Callable[[str], Metrics | None]  # a path under metrics/ -> its JSON, or None


def workspace_metrics(root: Path) -> Loader:
    """Reads ``root/metrics/<rel>``; a missing file gives None."""

    def load(rel: str) -> Metrics | None:
        path = root / "metrics" / rel
        return json.loads(path.read_text()) if path.is_file() else None

    return load


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def committed_metrics(root: Path, rev: str) -> Loader:
    """Reads ``metrics/<rel>`` as committed at git revision ``rev`` of the repo at ``root``
    (``git show <rev>:metrics/<rel>``); a file absent from that commit gives None.

    Raises:
        ValueError: ``rev`` is not a commit of that repo (or ``root`` is no git repo).
    """
    found = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if found.returncode != 0:
        raise ValueError(f"{rev!r} is not a commit of the git repo at {root}")
    commit = found.stdout.strip()
    cache: dict[str, Metrics | None] = {}

    def load(rel: str) -> Metrics | None:
        if rel not in cache:
            shown = _git(root, "show", f"{commit}:./metrics/{rel}")
            cache[rel] = json.loads(shown.stdout) if shown.returncode == 0 else None
        return cache[rel]

    return load


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _pct2(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _at(d: Metrics | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _rows(load: Loader) -> list[tuple[str, Callable[[str], str]]]:
    def m(rel: str) -> Callable[[str], Metrics | None]:
        return lambda model: load(rel.format(model=model))

    ev, tr, ar = m("evaluate/{model}.json"), m("train/{model}.json"), m("architecture/{model}.json")
    cm, tg = m("attack/class_model-{model}.json"), m("attack/targeted-{model}.json")
    nz = m("attack/noise-{model}.json")
    pgd, strong = m("attack/pgd-{model}.json"), m("attack/strong-{model}.json")
    attr = m("attribution/{model}.json")
    transfer = load("transfer.json")

    def eps_pair(d: Metrics | None, *keys: str) -> str:
        return " / ".join(_pct(_at(d, *keys, e)) for e in ("0.1", "0.3"))

    def square_broke(model: str) -> str:
        sq = _at(strong(model), "square")
        if not sq:
            return "-"
        broken = " / ".join(str(sq["broken"].get(e, "-")) for e in ("0.1", "0.3"))
        return f"{broken} ({sq['queries']:,} queries)"

    def standard(model: str) -> str:
        std = _at(strong(model), "standard")
        acc = _at(std, "robust_accuracy", "0.3")
        if acc is None:
            return "-"
        gap = _at(std, "gap", "0.3")
        return f"{_pct(acc)} ({'-' if gap is None else f'{100 * gap:.1f}'})"

    def min_eps(model: str) -> str:
        q = _at(strong(model), "min_eps")
        if not q:
            return "-"
        return f"{_num(q.get('median'))} [{_num(q.get('q1'))}, {_num(q.get('q3'))}]"

    def deletion(fill: str) -> Callable[[str], str]:
        def cell(model: str) -> str:
            d = attr(model)
            best = _at(d, "best_method", fill)
            if best is None:
                return "-"
            auc = _at(d, "deletion_auc", fill)
            return f"{best}: {_num(auc[best])} vs random {_num(auc['random'])}"

        return cell

    def trusted(model: str) -> str:
        d = attr(model)
        if d is None or "trusted_method" not in d:
            return "-"
        name = d["trusted_method"]
        if name is None:
            return "none passes the sanity check"
        return f"{name}: {_num(d['trusted_deletion_auc'])}"

    def sanity_fails(model: str) -> str:
        passes = _at(attr(model), "sanity_passes")
        if passes is None:
            return "-"
        failed = [k for k, ok in passes.items() if not ok]
        return ", ".join(failed) if failed else "none"

    def judged(kind: str) -> Callable[[str], str]:
        """The class-image judges of ``kind`` (seeded, from_noise) for one model."""

        def cell(model: str) -> str:
            j = _at(transfer, "class_image_judges", kind, model)
            if j is None:
                return "-"
            seed = f" (seed {j['seed_nearest_l2']:.2f})" if "seed_nearest_l2" in j else ""
            return (
                f"{_pct(j['knn_accuracy'])} / {j['nearest_l2']:.2f}{seed} / "
                f"{_pct(j['cross_model'])}"
            )

        return cell

    def arch(model: str) -> str:
        d = ar(model)
        return "-" if d is None else f"{d['total_params']:,} / {d['total_neurons']:,}"

    def seconds(model: str) -> str:
        s = _at(tr(model), "train_seconds")
        epochs = _at(tr(model), "seconds_per_epoch")
        return "-" if s is None else f"{s:.0f} s ({len(epochs)} epochs)"

    return [
        ("test accuracy", lambda k: _pct2(_at(ev(k), "test_accuracy"))),
        ("training time", seconds),
        ("parameters / neurons", arch),
        (
            "class images from noise: success (mean confidence)",
            lambda k: f"{_pct(_at(cm(k), 'success_rate'))} ({_pct(_at(cm(k), 'mean_confidence'))})",
        ),
        (
            "targeted attack / learned noise: success",
            lambda k: f"{_pct(_at(tg(k), 'success_rate'))} / {_pct(_at(nz(k), 'success_rate'))}",
        ),
        (
            "PGD-40 robust accuracy (`attack@pgd`), eps 0.1 / 0.3",
            lambda k: eps_pair(pgd(k), "robust_accuracy"),
        ),
        (
            "strong ensemble robust accuracy (`attack@strong`), eps 0.1 / 0.3",
            lambda k: eps_pair(strong(k), "robust_accuracy", "strong"),
        ),
        (
            "gap PGD-40 minus strong on the strong form's images, eps 0.1 / 0.3",
            lambda k: eps_pair(strong(k), "robust_accuracy", "gap"),
        ),
        ("of those the gradient attacks left, Square broke (images), eps 0.1 / 0.3", square_broke),
        (
            "AutoAttack's standard budget (APGD-T on 9 targets, Square 5,000 queries) on what the "
            "ensemble left, eps 0.3: robust accuracy (points below the ensemble's)",
            standard,
        ),
        ("smallest eps that flips an image: median [q1, q3]", min_eps),
        (
            "class images from one seed in an L2 ball: the 5 nearest training digits vote the "
            "class / distance to the nearest real digit of the class / the other models read it",
            judged("seeded"),
        ),
        ("the same judges on the class images grown from noise", judged("from_noise")),
        (
            "deletion AUC, black fill: best method vs random order (lower is better)",
            deletion("black"),
        ),
        (
            "deletion AUC, blur fill: best method vs random order (lower is better)",
            deletion("blur"),
        ),
        ("attribution methods failing the sanity check", sanity_fails),
        (
            "trusted attribution method: passes the sanity check, lowest blur-fill deletion AUC",
            trusted,
        ),
    ]


def table(root: Path, rev: str | None = None) -> str:
    """The markdown table of headline numbers from ``root/metrics``, or from the metrics
    committed at git revision ``rev`` of the repo at ``root`` (see :func:`committed_metrics`).
    """
    load = workspace_metrics(root) if rev is None else committed_metrics(root, rev)
    head = "| | " + " | ".join(f"`{k}`" for k in MODELS) + " | reference report |"
    lines = [head, "| --- |" + " ---: |" * len(MODELS) + " ---: |"]
    for label, cell in _rows(load):
        cells = " | ".join(cell(k) for k in MODELS)
        lines.append(f"| {label} | {cells} | {REFERENCE.get(label, 'not studied')} |")
    return "\n".join(lines)


def readme_table(readme: str) -> str:
    """The table between README's markers.

    Raises:
        ValueError: a marker is missing.
    """
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"README.md lacks the markers {BEGIN!r} and {END!r}")
    return readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    parser.add_argument(
        "--rev", help="read the metrics committed at this git revision (e.g. HEAD), not the files"
    )
    args = parser.parse_args(argv)
    text = table(args.root, args.rev)
    if not args.write:
        sys.stdout.write(text + "\n")
        return 0
    path = args.root / "README.md"
    readme = path.read_text()
    readme_table(readme)  # both markers are there
    head, rest = readme.split(BEGIN, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{rest.split(END, 1)[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
