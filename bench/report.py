"""BENCHMARKS.md: a table rendered from bench/results.json (kept so cases can be rerun alone)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("results.json")
HEADER = ("case", "measure", "ours", "baseline", "ratio", "notes")

NOTES = Path(__file__).with_name("notes.md")  # the hand-written reading of the table


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def load_rows(_out: str) -> dict[str, list[list]]:
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())["rows"]
    return {}


def write(out: str, rows: dict[str, list[list]]) -> None:
    RESULTS.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`python -m bench`); every ratio compares two loops measured",
        "in the same run on the same machine, so it holds up on noisy machines where absolute",
        "figures do not. Higher ratio = ours faster (or, for times, ours takes that fraction).",
        "",
        f"Machine: {machine()}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "| " + " | ".join("---" for _ in HEADER) + " |",
    ]
    for case_rows in rows.values():
        for row in case_rows:
            lines.append("| " + " | ".join(str(v) for v in row) + " |")
    lines += ["", NOTES.read_text().rstrip("\n")]
    Path(out).write_text("\n".join(lines) + "\n")
