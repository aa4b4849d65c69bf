"""`make serve` for tests, never rebuilding the shared virtual environment.

`serve` depends on `setup`, whose stamps (`.venv/.deps`, `.venv/.pkg`) are older than
the lock file in a fresh checkout or scratch copy: a plain `make serve` there would
delete and rebuild the venv. Tests name the stamps with `-o` (never remake) and check
with `make -n` that serving is the only command before running anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def make_serve_command(cwd: Path, **variables: str) -> list[str]:
    """The `make serve` command line for ``cwd``, checked to run nothing but the server.

    Raises:
        AssertionError: `make -n` shows any other command (a venv rebuild).
    """
    venv = Path(sys.executable).parent.parent
    cmd = [
        "make",
        "--no-print-directory",
        "serve",
        f"VENV={venv}",
        "-o",
        f"{venv}/.deps",
        "-o",
        f"{venv}/.pkg",
        *(f"{k}={v}" for k, v in variables.items()),
    ]
    dry = subprocess.run(
        [*cmd[:1], "-n", *cmd[1:]], cwd=cwd, capture_output=True, text=True, check=True
    )
    commands = [ln for ln in dry.stdout.splitlines() if ln.strip() and not ln.startswith(" ")]
    assert len(commands) == 1 and "-m serving" in dry.stdout, dry.stdout
    assert not any(w in dry.stdout for w in ("pip ", "rm -rf", "-m venv")), dry.stdout
    return cmd
