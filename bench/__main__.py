"""`make bench`: every row a ratio against a baseline measured in the same run.

Writes BENCHMARKS.md (a table, with the machine named). Run with `--only train`
(or occlusion, pgd, stages, square_budget, startup, warm, pipeline, queue, sweep) to
refresh some rows; others are kept.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bench import efficiency, parallel, report, robust, sweep, warm
from bench.cases import CASES as BASE_CASES

CASES = {
    **BASE_CASES,
    **robust.CASES,
    **efficiency.CASES,
    **parallel.CASES,
    **warm.CASES,
    **sweep.CASES,
}

log = logging.getLogger("bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="cases to run")
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--data", default=None, help="raw MNIST dir (default: data/MNIST/raw)")
    args = parser.parse_args(argv)
    # `dvc` and the stages' `python` must be this environment's, as under `make`'s venv.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    rows = report.load_rows(args.out)
    for name in args.only or list(CASES):
        log.info("bench: %s", name)
        rows[name] = CASES[name](args)
        for row in rows[name]:
            log.info("  %s", " | ".join(str(v) for v in row))
        report.write(args.out, rows)
    print(open(args.out).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
