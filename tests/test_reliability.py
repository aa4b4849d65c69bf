"""Bad input and faults: clear one-line errors, non-zero exits, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, run, write_params
from mnistlab.core import mnist as data

pytestmark = pytest.mark.slow

TRAIN_CMD = [
    "python",
    "-m",
    "stages.train",
    "--model",
    "cnn",
    "--data",
    "data/MNIST/raw",
    "--checkpoint",
    "models/cnn.pt",
    "--metrics",
    "metrics/train/cnn.json",
    "--rows",
    "plots/train/cnn.csv",
    "--figures",
    "plots/train/cnn",
]


@pytest.fixture
def downloaded(scratch_repo: Path) -> Path:
    run(["dvc", "repro", "download"], cwd=scratch_repo)
    (scratch_repo / "mlflow.db").unlink()
    for d in ("mlruns",):
        subprocess.run(["rm", "-rf", str(scratch_repo / d)], check=True)
    return scratch_repo


def _stage(repo: Path, cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    return run(cmd, cwd=repo, check=False, env=env)


def _outputs(repo: Path) -> dict[str, bytes]:
    """Every file under the output folders (the scratch repo starts with the committed
    metrics and plot series), to show a failed stage changed none of them."""
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for d in ("metrics", "models", "plots")
        for p in sorted((repo / d).rglob("*"))
        if p.is_file()
    }


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"train": {"epocks": 1}}, "train.epocks: unknown key"),
        ({"train": {"epochs": "two"}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"lr": -1.0}}, "train.lr: Input should be greater than 0"),
        ({"models": {"resnet": {}}}, "models.resnet:"),
        ({"attacks": {"gradient": {}}}, "attacks.gradient: unknown key"),
        ({"attacks": {"targeted": {"targets": [2, 10]}}}, "attacks.targeted.targets.1:"),
        ({"visualize": {"occlusion": {"patch": 29}}}, "visualize.occlusion.patch:"),
        ({"attacks": {"fgsm": {"eps": [0.1, -0.1]}}}, "attacks.fgsm.eps.1:"),
        ({"attacks": {"pgd": {"eps": []}}}, "attacks.pgd.eps:"),
        ({"attacks": {"pgd": {"steps": 0}}}, "attacks.pgd.steps:"),
        ({"device": "tpu"}, "device:"),
        ({"evaluate": {"n_samples": 0}}, "evaluate.n_samples:"),
    ],
)
def test_bad_params_touch_nothing(downloaded: Path, override: dict, needle: str) -> None:
    repo = downloaded
    before = _outputs(repo)
    write_params(repo, override)
    proc = _stage(repo, TRAIN_CMD)
    assert proc.returncode != 0
    assert needle in _error_line(proc)
    assert _outputs(repo) == before
    assert not (repo / "mlflow.db").exists()  # no MLflow run was opened


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train:\n  epochs: [1\n", "malformed YAML at line"),
        ("train:\n  epochs: 1\n  epochs: 2\n", "duplicate key 'epochs'"),
    ],
)
def test_unparseable_params(downloaded: Path, text: str, needle: str) -> None:
    before = _outputs(downloaded)
    (downloaded / "params.yaml").write_text(text)
    proc = _stage(downloaded, TRAIN_CMD)
    assert proc.returncode != 0 and needle in _error_line(proc)
    assert _outputs(downloaded) == before
    assert not (downloaded / "mlflow.db").exists()


def test_corrupt_data_is_caught_before_training_and_recovered(downloaded: Path) -> None:
    repo = downloaded
    raw = repo / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    blob = bytearray(raw.read_bytes())
    raw.chmod(0o644)
    raw.write_bytes(bytes(blob[:-100]))  # truncated
    proc = _stage(repo, TRAIN_CMD)
    assert proc.returncode != 0
    assert "truncated or corrupt" in _error_line(proc)
    assert not (repo / "mlflow.db").exists()
    # dvc notices the damaged output and the download stage restores it
    assert "download" in run(["dvc", "status", "download"], cwd=repo).stdout
    run(["dvc", "repro", "download"], cwd=repo)
    assert data.verify_raw_dir(raw.parent)


def test_missing_data_file(downloaded: Path) -> None:
    (downloaded / "data" / "MNIST" / "raw" / "train-labels-idx1-ubyte").unlink()
    proc = _stage(downloaded, TRAIN_CMD)
    assert proc.returncode != 0
    assert "train-labels-idx1-ubyte: missing" in _error_line(proc)
    assert not (downloaded / "mlflow.db").exists()


@pytest.mark.parametrize("stage", ["evaluate", "visualize", "attack", "transfer"])
def test_corrupt_checkpoint_is_a_clear_error(downloaded: Path, stage: str) -> None:
    repo = downloaded
    (repo / "models").mkdir()
    (repo / "models" / "cnn.pt").write_bytes(b"not a checkpoint")
    common = ["--data", "data/MNIST/raw", "--metrics", "m.json"]
    one = ["--model", "cnn", "--checkpoint", "models/cnn.pt"]
    extra = {
        "evaluate": [*one, "--rows", "c.csv", "--figures", "f"],
        "visualize": [*one, "--figures", "f", "--arrays", "a.npz"],
        "attack": [
            *one,
            "--form",
            "fgsm",
            "--rows",
            "s.csv",
            "--figures",
            "f",
            "--arrays",
            "a.npz",
        ],
        "transfer": [
            "--models-dir",
            "models",
            "--arrays-dir",
            "artifacts/attack",
            "--figures",
            "f",
        ],
    }[stage]
    proc = _stage(repo, ["python", "-m", f"stages.{stage}", *common, *extra])
    assert proc.returncode != 0
    assert "models/cnn.pt: corrupt or incompatible checkpoint" in _error_line(proc)
    assert not any((repo / name).exists() for name in ("m.json", "f", "a.npz", "c.csv"))


def test_unreachable_tracking_store_fails_before_compute(downloaded: Path) -> None:
    before = _outputs(downloaded)
    start = time.time()
    proc = _stage(downloaded, TRAIN_CMD, MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    assert proc.returncode != 0
    assert "MLflow tracking store http://127.0.0.1:9 is unreachable" in _error_line(proc)
    assert "training cnn" not in proc.stderr
    assert time.time() - start < 60
    assert _outputs(downloaded) == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_training_leaves_nothing_partial(downloaded: Path, sig: int) -> None:
    import mlflow

    repo = downloaded
    before = _outputs(repo)
    write_params(repo, {"train": {"epochs": 50, "train_limit": 5000}})
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(TRAIN_CMD, cwd=repo, env=env, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # wait until training has really started
        seen.append(line)
        if "training cnn on" in line:
            break
    time.sleep(3)
    proc.send_signal(sig)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode != 0, "".join(seen) + rest
    assert "interrupted" in rest
    assert not (repo / "models" / "cnn.pt").exists()
    assert _outputs(repo) == before  # the committed metrics and series are untouched
    leftovers = [p for p in repo.rglob("*.tmp") if ".dvc" not in p.parts]
    assert leftovers == []
    client = mlflow.MlflowClient(f"sqlite:///{repo}/mlflow.db")
    exp = client.get_experiment_by_name("mnistlab")
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.status == "KILLED"

    write_params(repo, {"train": {"epochs": 1, "train_limit": 1000}})
    run(["dvc", "repro", "train@cnn"], cwd=repo)
    assert json.loads((repo / "metrics/train/cnn.json").read_text())["n_train"] == 1000
