"""Atomic writes: every output appears whole or not at all (temp file + rename).

Outputs get the modes an ordinary ``open``/``mkdir`` would give them (0644 files,
0755 directories under the usual umask 022), not the private 0600/0700 of ``mkstemp``
and ``mkdtemp``. Every path replaced in this process is remembered, so a stage that
fails or is interrupted later can say honestly which outputs it already wrote.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnistlab.core.errors import OutputError

_written: list[Path] = []


def written_paths() -> tuple[Path, ...]:
    """Outputs this process has replaced so far (in order), for honest failure messages."""
    return tuple(_written)


def forget_written() -> None:
    """Start a fresh record of replaced outputs (each stage run starts with none)."""
    _written.clear()


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
        _written.append(path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; it replaces ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _written[:] = [p for p in _written if not p.is_relative_to(tmp)]  # now inside path
        _written.append(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _non_finite_key(obj: Any, prefix: str = "") -> str | None:
    """The dotted key of the first NaN or infinite float in ``obj``, else ``None``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return prefix or "<top level>"
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _non_finite_key(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def to_json(obj: Any) -> str:
    """Stable, strict JSON text (2-space indent, trailing newline) for metrics files.

    Raises:
        OutputError: ``obj`` holds NaN or an infinity, which JSON cannot represent
            (``json.dumps`` would write the non-standard ``NaN``, which strict parsers,
            ``dvc metrics`` among them, reject).
    """
    try:
        return json.dumps(obj, indent=2, allow_nan=False) + "\n"
    except ValueError:
        key = _non_finite_key(obj)
        if key is None:
            raise
        raise OutputError(f"non-finite number at {key}: JSON metrics must be finite") from None


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (see :func:`to_json`), atomically.

    Raises:
        OutputError: ``obj`` holds NaN or an infinity; nothing is written.
    """
    try:
        text = to_json(obj)
    except OutputError as err:
        raise OutputError(f"{path}: {err}") from None
    write_text(path, text)


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write dict rows as CSV (header from the first row; ``None`` as an empty cell)."""
    import csv
    import io

    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    write_text(path, buf.getvalue())


def write_npz(path: str | Path, arrays: dict[str, Any]) -> None:
    """Write arrays as a compressed ``.npz`` that ``numpy.load`` reads, byte-identical for
    identical arrays (``numpy.savez`` stamps each member with the current time)."""
    import zipfile

    import numpy as np

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
