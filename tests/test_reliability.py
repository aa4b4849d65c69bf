"""Bad input and faults: clear one-line errors, non-zero exits, nothing half-written.

Most tests run real stage processes (by hand or under `dvc repro`) in a copy of the
session's tiny build (helpers.pipeline) and are marked `slow`; the unit tests (the end of
the file, and validate_params' checks run in-process) are not. Bad params are checked
in-process, through the loader and the validate_params body the stages run
(tests/test_config.py, and here); a few cases go through a real stage process and `dvc
repro` end to end, to prove the path from that check to the one ERROR line, the exit
status and the untouched outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from conftest import BIN, REPO, run, write_params
from helpers.pipeline import STORE, TinyBuild, roll_back_to_downloaded
from helpers.runs import stage_runs, warm_servers
from mnistlab.core import mnist as data
from mnistlab.core.errors import ParamsError
from mnistlab.harness.runtime import EXIT_INTERRUPTED, EXIT_USAGE
from mnistlab.harness.tracking_store import BUSY_TIMEOUT_ENV

slow = pytest.mark.slow

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
def downloaded(pipeline_copy: Path) -> Path:
    """A copy of the tiny build as a fresh scratch repo is after `dvc repro download`:
    MNIST in place, no checkpoint, figure or array, the committed metrics and plot
    series, no MLflow store."""
    return roll_back_to_downloaded(pipeline_copy)


@pytest.fixture(scope="module")
def _params_base(tiny_build: TinyBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_build.copy(tmp_path_factory.mktemp("bad-params") / "repo")


@pytest.fixture
def params_repo(_params_base: Path) -> Iterator[Path]:
    """One copy of the tiny build (every output, no MLflow store) for all the bad-params
    cases: each case finds the committed params.yaml and no MLflow store, whatever the
    case before it did."""
    repo = _params_base
    params = repo / "params.yaml"
    committed = params.read_bytes()
    assert not any((repo / name).exists() for name in STORE)
    yield repo
    params.write_bytes(committed)
    for name in STORE:
        subprocess.run(["rm", "-rf", str(repo / name)], check=True)


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


@slow
@pytest.mark.parametrize(
    ("params", "needle"),
    [
        pytest.param(
            {"train": {"epocks": 1}}, "params.yaml: train.epocks: unknown key", id="value"
        ),
        pytest.param(
            b"seed: 42\ndevice: \xe9\n",
            "params.yaml: not UTF-8 text (byte 0xe9 at line 2)",
            id="not-utf8",
        ),
    ],
)
def test_bad_params_stop_a_stage_process_touching_nothing(
    params_repo: Path, params: dict | bytes, needle: str
) -> None:
    """A real `python -m stages.train`: a bad value and an unreadable file each end it
    with exit 2 and one ERROR line naming the cause, before any output or MLflow store.

    Every other bad value and unreadable file is checked in-process, through the
    ``load_params()`` call every stage makes first (tests/test_config.py:
    ``test_bad_params_name_the_key``, ``test_limits_name_the_key``,
    ``test_unreadable_params_are_one_line``, ``test_invalid_utf8_is_one_line``); these
    two prove the way from that error to the process's exit, end to end.
    """
    repo = params_repo
    before = _outputs(repo)
    if isinstance(params, bytes):
        (repo / "params.yaml").write_bytes(params)
    else:
        write_params(repo, params)
    proc = _stage(repo, TRAIN_CMD)
    assert proc.returncode == EXIT_USAGE, proc.stderr[-3000:]
    assert needle in _error_line(proc)
    assert _outputs(repo) == before
    assert not (repo / "mlflow.db").exists()  # no MLflow run was opened


@slow
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


@slow
def test_missing_data_file(downloaded: Path) -> None:
    (downloaded / "data" / "MNIST" / "raw" / "train-labels-idx1-ubyte").unlink()
    proc = _stage(downloaded, TRAIN_CMD)
    assert proc.returncode != 0
    assert "train-labels-idx1-ubyte: missing" in _error_line(proc)
    assert not (downloaded / "mlflow.db").exists()


@slow
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
            "--transfer",
            "t.npz",
        ],
        "transfer": [
            "--models-dir",
            "models",
            "--arrays-dir",
            "artifacts/transfer",
            "--figures",
            "f",
        ],
    }[stage]
    proc = _stage(repo, ["python", "-m", f"stages.{stage}", *common, *extra])
    assert proc.returncode != 0
    assert "models/cnn.pt: corrupt or incompatible checkpoint" in _error_line(proc)
    assert not any((repo / name).exists() for name in ("m.json", "f", "a.npz", "c.csv"))


@slow
def test_unreachable_tracking_store_fails_before_compute(downloaded: Path) -> None:
    before = _outputs(downloaded)
    # The timeout is only a hang guard (MLflow's own retries would take minutes): that
    # it fails before computing is what "training cnn" (the first line of training) says.
    proc = run(
        TRAIN_CMD,
        cwd=downloaded,
        check=False,
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
        timeout=300,
    )
    assert proc.returncode != 0
    assert "MLflow tracking store http://127.0.0.1:9 is unreachable" in _error_line(proc)
    assert "training cnn" not in proc.stderr
    assert _outputs(downloaded) == before


# tqdm's bar once training has stepped: "cnn epoch 1/50:   8%|▊   | 3/36 [00:01<...".
_BATCHES_DONE = re.compile(r"cnn epoch \d+/50: .*\| *[1-9]\d*/\d+ \[")


@slow
def test_signal_during_training_leaves_nothing_partial(downloaded: Path) -> None:
    """SIGTERM, then SIGINT (Ctrl-C), each in the middle of training by hand: the stage
    says so, exits 130, writes nothing and leaves no temp file; its run is KILLED. Then
    `dvc repro` trains in the same workspace: one rerun for both, since each interrupt is
    shown to leave the outputs as it found them."""
    repo = downloaded
    before = _outputs(repo)
    write_params(repo, {"train": {"epochs": 50, "train_limit": 5000}})
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for done, sig in enumerate((signal.SIGTERM, signal.SIGINT), start=1):
        proc = subprocess.Popen(
            TRAIN_CMD,
            cwd=repo,
            env=env,
            stderr=subprocess.PIPE,
            text=True,  # universal newlines: each of tqdm's \r updates reads as a line
            # a suite started in the background inherits SIGINT ignored: give the stage Ctrl-C
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        seen = []
        try:
            for line in proc.stderr:  # training is under way: a batch is done
                seen.append(line)
                if _BATCHES_DONE.search(line):
                    break
            else:
                pytest.fail(f"{sig!r}: the stage ended before training\n{''.join(seen)[-3000:]}")
            proc.send_signal(sig)
            rest = proc.communicate(timeout=120)[1]
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == EXIT_INTERRUPTED, "".join(seen)[-2000:] + rest
        assert "interrupted; no partial outputs were kept" in rest
        assert not (repo / "models" / "cnn.pt").exists()
        assert _outputs(repo) == before  # the committed metrics and series are untouched
        leftovers = [p for p in repo.rglob("*.tmp") if ".dvc" not in p.parts]
        assert leftovers == []
        # the stage runs, not their parents (a stage run by hand has none)
        assert [r.info.status for r in stage_runs(repo)] == ["KILLED"] * done

    write_params(repo, {"train": {"epochs": 1, "train_limit": 1000}})
    run(["dvc", "repro", "train@cnn"], cwd=repo)
    assert json.loads((repo / "metrics/train/cnn.json").read_text())["n_train"] == 1000


# --------------------------------------------------------------------- issue 14: helpers


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _our_error_line(text: str) -> str:
    """The stage's one ERROR line (DVC adds its own `ERROR: failed to reproduce`)."""
    lines = [ln for ln in text.splitlines() if "ERROR mnistlab" in ln]
    assert len(lines) == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    return lines[0]


def _stage_pids(repo: Path, module: str = "stages.train") -> list[int]:
    """Live processes of stage ``module`` in ``repo`` (a /proc scan; other people's
    stages elsewhere on the machine do not count): its launcher (``python -m stages
    train`` or ``python -m stages.train``) and, when it runs warm, its worker (named
    ``stage train``, see mnistlab.harness.warm)."""
    want = os.path.realpath(repo)
    package, name = module.split(".")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            comm = (entry / "comm").read_text().strip()
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone, or a zombie
            continue
        launcher = module.encode() in argv or any(
            a == package.encode() and b == name.encode()
            for a, b in zip(argv, argv[1:], strict=False)
        )
        if (launcher or comm == f"stage {name}"[:15]) and os.path.realpath(cwd) == want:
            pids.append(int(entry.name))
    return pids


class _Reader:
    """Collect a process's merged output in a thread, so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        import threading

        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line)

    def wait_for(self, needle: str, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while not any(needle in ln for ln in self.lines):
            assert time.time() < deadline, "".join(self.lines)[-3000:]
            time.sleep(0.2)

    @property
    def text(self) -> str:
        self._thread.join(timeout=30)
        return "".join(self.lines)


def _registered_versions(repo: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo}/mlflow.db")
    return client.search_model_versions()


# ------------------------------------------- 1. a stage dies with its parent; one writer


@slow
def test_killing_dvc_stops_the_stage_and_a_rerun_completes(downloaded: Path) -> None:
    """Kill only `dvc repro` (SIGTERM, then SIGKILL) mid-training: the stage goes too.

    DVC runs the stage with ``$SHELL -c``: bash replaces itself with the stage (its
    parent is DVC), dash forks it (its parent is the shell, which outlives DVC). A warm
    stage (the second of its execution, after validate_params) is a launcher plus a
    worker forked from the warm server: all three must go.
    """
    repo = downloaded
    cases = (
        (signal.SIGTERM, "/bin/bash", "1"),
        (signal.SIGKILL, "/bin/sh", "1"),
        (signal.SIGKILL, "/bin/sh", "0"),
    )
    for epochs, (sig, shell, warm) in enumerate(cases, start=50):
        # a params change reruns validate_params first: it starts the warm server
        write_params(repo, {"train": {"epochs": epochs, "train_limit": 5000}})
        dvc = subprocess.Popen(
            ["dvc", "repro", "train@cnn"],
            cwd=repo,
            env={**_env(), "SHELL": shell, "MNISTLAB_WARM": warm},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        reader = _Reader(dvc)
        try:
            reader.wait_for("training cnn on")
            stage = _stage_pids(repo)
            assert len(stage) == (2 if warm == "1" else 1), stage  # launcher (+ worker)
            os.kill(dvc.pid, sig)  # the dvc process only, not its group
            dvc.wait(timeout=30)
            deadline = time.time() + 30  # a guard: they go at once (pdeathsig, watchdog)
            while (_stage_pids(repo) or warm_servers(dvc.pid)) and time.time() < deadline:
                time.sleep(0.2)
            survivors = _stage_pids(repo) + warm_servers(dvc.pid)
            alive = f"{sig!r}, {shell}, warm={warm}: {survivors} outlived dvc"
            assert survivors == [], f"{alive}\n{reader.text}"
            assert "interrupted; no partial outputs were kept" in reader.text
            killed = stage_runs(repo, "train@cnn")[-1]
            assert killed.info.status == "KILLED"
            assert killed.data.tags["warm"] == ("true" if warm == "1" else "false")
        finally:
            for pid in _stage_pids(repo) + warm_servers(dvc.pid):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(dvc.pid, signal.SIGKILL)
        assert not set(stage) & set(_stage_pids(repo))
    assert not (repo / "models" / "cnn.pt").exists()

    write_params(repo, {"train": {"epochs": 1, "train_limit": 1000}})
    run(["dvc", "repro", "train@cnn"], cwd=repo)
    metrics = json.loads((repo / "metrics/train/cnn.json").read_text())
    assert metrics["n_train"] == 1000 and len(metrics["seconds_per_epoch"]) == 1
    import torch

    ckpt = torch.load(repo / "models/cnn.pt", weights_only=True)
    assert ckpt["params"]["train"]["epochs"] == 1
    assert "up to date" in run(["dvc", "status", "train@cnn"], cwd=repo).stdout
    assert stage_runs(repo, "train@cnn")[-1].info.status == "FINISHED"


@slow
def test_second_writer_of_a_stage_fails_naming_the_first(downloaded: Path) -> None:
    repo = downloaded
    write_params(repo, {"train": {"epochs": 50, "train_limit": 5000}})
    first = subprocess.Popen(
        TRAIN_CMD, cwd=repo, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    reader = _Reader(first)
    try:
        reader.wait_for("training cnn on")
        second = _stage(repo, TRAIN_CMD)
        assert second.returncode == 1
        line = _error_line(second)
        assert f"train@cnn: already running in pid {first.pid}" in line
        assert first.poll() is None  # the first one is untouched
    finally:
        first.terminate()
        first.wait(timeout=60)
    assert "interrupted" in reader.text


# ---------------------------------------------------- 2. training diverges under dvc repro


@slow
def test_diverging_training_fails_in_one_line_and_registers_nothing(downloaded: Path) -> None:
    repo = downloaded
    committed = (repo / "metrics/train/cnn.json").read_bytes()
    write_params(repo, {"train": {"optimizer": "sgd", "lr": 1e5}})  # finite, valid, diverges
    proc = run(["dvc", "repro", "train@cnn"], cwd=repo, check=False)
    assert proc.returncode != 0
    line = _our_error_line(proc.stdout + proc.stderr)
    assert "cnn: the training loss became nan" in line
    assert not (repo / "models/cnn.pt").exists()
    metrics = repo / "metrics/train/cnn.json"  # DVC removes it before the run; none new
    assert not metrics.exists() or metrics.read_bytes() == committed
    assert not (repo / "plots/train/cnn").exists()
    assert _registered_versions(repo) == []
    assert stage_runs(repo, "train@cnn")[-1].info.status == "FAILED"


# --------------------------------- the tiny build: strict JSON, bad params, checkpoints

OUTPUT_DIRS = ("models", "metrics", "plots", "artifacts")


def _all_outputs(repo: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for d in OUTPUT_DIRS
        for p in sorted((repo / d).rglob("*"))
        if p.is_file()
    }


def _strict(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


@slow
def test_every_metrics_json_is_strict(tiny_build: TinyBuild) -> None:
    built = tiny_build.repo
    files = [p for d in ("metrics", "artifacts") for p in (built / d).rglob("*.json")]
    fresh = {"metrics/train/cnn_bn.json", "metrics/evaluate/cnn.json", "metrics/visualize/cnn.json"}
    assert fresh <= {str(p.relative_to(built)) for p in files}
    assert len(files) >= 30  # every stage's (tests/test_pipeline.py had this one twice)
    for path in files:
        json.loads(path.read_text(), parse_constant=_strict)


def _edit(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Edit params.yaml as data (write_params merges, so it cannot empty a mapping)."""

    def edit(repo: Path) -> None:
        raw = yaml.safe_load((repo / "params.yaml").read_text())
        change(raw)
        (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    return edit


def _bad_utf8(repo: Path) -> None:
    path = repo / "params.yaml"
    path.write_bytes(path.read_bytes() + b"\nnote: \xff\n")


# Each bad edit and a part of the one-line error it must give (validate_params' own; DVC
# gives its own for the ones it refuses).
BAD_PARAMS: dict[str, tuple[Callable[[Path], None], str]] = {
    "seed -1": (
        _edit(lambda raw: raw.update(seed=-1)),
        "params.yaml: seed: Input should be greater than or equal to 0",
    ),
    "models {}": (
        _edit(lambda raw: raw.update(models={})),
        "params.yaml: models: Dictionary should have at least 1 item",
    ),
    "no transfer image": (
        _edit(lambda raw: raw["attacks"]["noise"].update(n_transfer_same=0, n_transfer_other=0)),
        "attacks.noise.n_transfer_same: n_transfer_same + n_transfer_other must be at least 1",
    ),
    "cuda on a CPU machine": (
        _edit(lambda raw: raw.update(device="cuda")),
        "device: 'cuda' requested but no CUDA device is available",
    ),
    "an unknown top-level key": (
        _edit(lambda raw: raw.update(model_names=["x"])),
        "params.yaml: model_names: unknown key",
    ),
    "a model of an unknown architecture": (
        _edit(lambda raw: raw["models"].update(x={"arch": "resnet", "arch_args": {}})),
        "params.yaml: models.x.arch: unknown architecture 'resnet'",
    ),
    # dvc.yaml iterates over params.yaml's `models`: DVC itself cannot read these
    "models not a mapping": (
        _edit(lambda raw: raw.update(models=3)),
        "params.yaml: models: Input should be a valid dictionary",
    ),
    "not UTF-8": (_bad_utf8, "params.yaml: not UTF-8 text (byte 0xff at line"),
}
# The cases DVC refuses while reading dvc.yaml (its interpolation reads params.yaml):
# nothing runs, not even validate_params, and DVC's own one-line error names params.yaml
# or the `foreach` over its models.
DVC_REFUSES = {"models not a mapping", "not UTF-8"}
# What `dvc repro` runs: both cases DVC refuses (it runs nothing, so they cost little)
# and one that validate_params refuses. That validate_params refuses every case in one
# line and writes nothing is proven in-process below; what these add is DVC's side: it
# runs validate_params first, stops there and deletes no output.
UNDER_DVC = ("an unknown top-level key", *sorted(DVC_REFUSES))


def _validate_params(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The validate_params stage's body, in-process, in ``repo`` as DVC runs it: without
    its ``stage_main`` wrapper, which turns a ParamsError into the one ERROR line and
    exit 2 (test_bad_params_stop_a_stage_process_touching_nothing, and the `dvc repro`
    cases, show that part)."""
    from stages import validate_params

    monkeypatch.chdir(repo)
    validate_params.main.__wrapped__(["--out", "artifacts/params_valid.json"])


def test_validate_params_in_process_writes_its_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committed params pass: the bad cases below fail for their edit alone."""
    from mnistlab.core.files import forget_written

    shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")
    try:
        _validate_params(tmp_path, monkeypatch)
    finally:
        forget_written()  # this process is no stage: drop what write_json recorded
    marker = tmp_path / "artifacts" / "params_valid.json"
    assert json.loads(marker.read_text()) == {"params.yaml": "valid"}


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_validate_params_refuses_each_bad_edit_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """Each bad edit of the committed params.yaml: validate_params raises a one-line
    ParamsError naming the key and writes nothing (no marker)."""
    import torch

    if case == "cuda on a CPU machine" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")
    edit, needle = BAD_PARAMS[case]
    edit(tmp_path)
    with pytest.raises(ParamsError) as info:
        _validate_params(tmp_path, monkeypatch)
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


@slow
@pytest.mark.parametrize("case", UNDER_DVC)
def test_bad_params_under_dvc_repro_keep_every_output(params_repo: Path, case: str) -> None:
    """validate_params runs first and fails; DVC deletes nothing (its marker is persist)."""
    built = params_repo
    before = _all_outputs(built)
    assert "artifacts/params_valid.json" in before and "models/cnn.pt" in before
    edit, needle = BAD_PARAMS[case]
    edit(built)
    assert run(["git", "diff", "--quiet", "params.yaml"], cwd=built, check=False).returncode
    # A timeout, should validation ever let it through: the whole pipeline would run.
    proc = run(["dvc", "repro"], cwd=built, check=False, timeout=300)
    assert proc.returncode != 0
    ran = [ln.split("'")[1] for ln in proc.stdout.splitlines() if ln.startswith("Running stage")]
    if case in DVC_REFUSES:
        assert ran == [], proc.stdout[-3000:]
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
        assert len(errors) == 1, proc.stderr[-3000:]
        assert "params.yaml" in errors[0] or "foreach" in errors[0], errors
    else:
        assert ran == ["validate_params"], proc.stdout[-3000:]
        assert needle in _our_error_line(proc.stdout + proc.stderr)
    assert _all_outputs(built) == before


@slow
def test_swapped_checkpoint_names_both_models(pipeline_copy: Path) -> None:
    built = pipeline_copy
    models = built / "models"
    original = (models / "cnn.pt").read_bytes()
    shutil.copyfile(models / "cnn_bn.pt", models / "cnn.pt")
    try:
        proc = run(["dvc", "repro", "-s", "evaluate@cnn"], cwd=built, check=False)
        assert proc.returncode != 0
        line = _our_error_line(proc.stdout + proc.stderr)
        assert "models/cnn.pt: holds model 'cnn_bn', expected 'cnn'" in line
    finally:
        (models / "cnn.pt").write_bytes(original)


# ------------------------------------------------ 5. failures after the outputs are written


@slow
def test_unwritable_artifact_store_after_outputs_is_one_honest_line(downloaded: Path) -> None:
    repo = downloaded
    # The store's own probe checks `mlruns` before any compute (tests/test_tracking.py);
    # break the logged models' folder below it, which only the logging after the outputs
    # reaches. A file where a folder should be: as root, chmod would not stop us.
    (repo / "mlruns").mkdir()
    (repo / "mlruns" / "models").write_text("not a directory\n")
    proc = _stage(repo, TRAIN_CMD)
    assert proc.returncode == 1
    line = _our_error_line(proc.stderr)
    assert "train@cnn:" in line and "outputs were written but MLflow logging failed" in line
    assert "Not a directory" in line and "rerun with `dvc repro train@cnn`" in line
    assert (repo / "models/cnn.pt").is_file()  # kept, and said so
    umask = _umask()
    assert (repo / "models/cnn.pt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (repo / "plots/train/cnn").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (repo / "plots/train/cnn/loss_curves.png").stat().st_mode & 0o777 == 0o666 & ~umask


# MLflow waits this long for a locked SQLite store, set short for the stage below
# (mnistlab.harness.tracking_store; MLflow's own is 20 s).
BUSY_TIMEOUT_S = 2.0


@slow
def test_database_locked_after_outputs_is_one_honest_line(downloaded: Path) -> None:
    """Another process holds the SQLite store locked when the stage has written its
    outputs: its MLflow logging fails after the busy timeout, the lock goes, and the
    stage says in one line that the outputs were written; its run is marked FAILED."""
    import sqlite3

    repo = downloaded
    run(["python", "-c", "import mlflow; mlflow.MlflowClient('sqlite:///mlflow.db')"], cwd=repo)
    stage = subprocess.Popen(
        TRAIN_CMD,
        cwd=repo,
        env={**_env(), BUSY_TIMEOUT_ENV: str(BUSY_TIMEOUT_S)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reader = _Reader(stage)
    try:
        # From here to its first MLflow call after the outputs it does not touch the store.
        reader.wait_for("training cnn on")
        db = sqlite3.connect(repo / "mlflow.db", isolation_level=None, timeout=60)
        db.execute("BEGIN EXCLUSIVE")
        deadline = time.time() + 180
        while not (repo / "plots/train/cnn").is_dir():  # its last output; logging next
            assert stage.poll() is None and time.time() < deadline, reader.text[-3000:]
            time.sleep(0.02)
        # The stage now meets the lock at its first MLflow call, waits out its busy
        # timeout and fails, then opens one more session to mark its run FAILED, which
        # waits as long again. Let go during that second wait: 1.75 timeouts from here
        # leave it 0.75 of a timeout (1.5 s) to reach its first call, and the second
        # wait a quarter to spare. What this sleep waits for is the first wait's end: a
        # duration of the stage's, not an event it shows.
        time.sleep(1.75 * BUSY_TIMEOUT_S)
        assert stage.poll() is None, reader.text[-3000:]
        db.execute("ROLLBACK")
        db.close()
        stage.wait(timeout=120)
    finally:
        if stage.poll() is None:
            stage.kill()
    assert stage.returncode == 1
    line = _our_error_line(reader.text)
    assert "outputs were written but MLflow logging failed" in line
    assert "database is locked" in line
    assert (repo / "models/cnn.pt").is_file()
    assert stage_runs(repo, "train@cnn")[-1].info.status == "FAILED"


def _figures_logged(repo: Path) -> bool:
    """Whether the stage's figures reached its MLflow run's artifacts (the logging of
    ``run.log_outputs``; the model, the slowest part, is logged after them)."""
    return any((repo / "mlruns").glob("*/artifacts/figures/*.png"))  # <run id>/artifacts


@slow
def test_sigterm_while_logging_says_outputs_were_written(downloaded: Path) -> None:
    repo = downloaded
    stage = subprocess.Popen(
        TRAIN_CMD, cwd=repo, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    reader = _Reader(stage)
    try:
        deadline = time.time() + 180
        while not _figures_logged(repo):  # logging to MLflow, the model still to come
            assert stage.poll() is None and time.time() < deadline, reader.text[-3000:]
            time.sleep(0.02)
        stage.send_signal(signal.SIGTERM)
        stage.wait(timeout=120)
    finally:
        if stage.poll() is None:
            stage.kill()
    assert stage.returncode == EXIT_INTERRUPTED, reader.text[-3000:]
    line = _our_error_line(reader.text)
    assert "train@cnn: interrupted" in line and "outputs were written" in line
    assert "no partial outputs were kept" not in line
    assert (repo / "models/cnn.pt").is_file()
    assert stage_runs(repo, "train@cnn")[-1].info.status == "KILLED"


# ---------------------------------------------------------------------------- unit tests


def _umask() -> int:
    from mnistlab.core.files import current_umask

    return current_umask()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_get_ordinary_modes(tmp_path: Path, umask: int) -> None:
    from mnistlab.core.files import atomic_dir, write_json

    old = os.umask(umask)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        with atomic_dir(tmp_path / "figs") as tmp:
            (tmp / "x.png").write_bytes(b"png")
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "figs").stat().st_mode & 0o777 == 0o777 & ~umask


def test_write_json_rejects_non_finite_numbers(tmp_path: Path) -> None:
    from mnistlab.core.errors import OutputError
    from mnistlab.core.files import write_json

    path = tmp_path / "m.json"
    with pytest.raises(OutputError) as info:
        write_json(path, {"per_class": [0.5, float("nan")], "ok": 1.0})
    assert (
        str(info.value) == f"{path}: non-finite number at per_class.1: JSON metrics must be finite"
    )
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left either


def test_gzip_bomb_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 MB `.gz` that inflates to 1 GiB: the local source stops at the expected size,
    having inflated no more than that plus one chunk (counted, not timed)."""
    import gzip

    from mnistlab import download
    from mnistlab.core.errors import DataError

    member = gzip.compress(b"\0" * (1 << 20), compresslevel=9)  # ~1 KB each, 1 MiB inflated
    src = tmp_path / "src"
    src.mkdir()
    (src / "train-images-idx3-ubyte.gz").write_bytes(member * 1024)  # gzip allows many members
    inflated = []
    read = gzip.GzipFile.read

    def counted(self: gzip.GzipFile, size: int = -1) -> bytes:
        block = read(self, size)
        inflated.append(len(block))
        return block

    monkeypatch.setattr(gzip.GzipFile, "read", counted)
    with pytest.raises(DataError) as info:
        download.download(
            tmp_path / "raw", ["local"], download.FetchSettings(local_dir=str(src), progress=False)
        )
    expected = 47040016
    assert f"decompresses to more than the expected {expected} bytes" in str(info.value)
    assert expected < sum(inflated) <= expected + download.CHUNK  # of the 1 GiB it holds
    assert not (tmp_path / "raw").exists()


def test_local_file_of_the_wrong_size_fails_before_copying(tmp_path: Path) -> None:
    from mnistlab import download
    from mnistlab.core.errors import DataError

    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="100 bytes, expected 47040016"):
        download.download(
            tmp_path / "raw",
            ["local"],
            download.FetchSettings(local_dir=str(tmp_path), progress=False),
        )


def test_stage_lock_names_the_holder(tmp_path: Path) -> None:
    from mnistlab.core.errors import StageBusyError
    from mnistlab.harness.supervision import lock_path, stage_lock

    (tmp_path / ".dvc").mkdir()
    with stage_lock("train@cnn", tmp_path) as path:
        assert path == lock_path("train@cnn", tmp_path)
        assert path.parent == tmp_path / ".dvc/tmp/mnistlab-locks"
        with pytest.raises(StageBusyError) as info:
            with stage_lock("train@cnn", tmp_path):
                pass
        assert f"train@cnn: already running in pid {os.getpid()}" in str(info.value)
        with stage_lock("train@cnn_bn", tmp_path):  # another stage: free
            pass
        other = tmp_path / "exp-copy"  # a queued experiment's own workspace: free
        (other / ".dvc").mkdir(parents=True)
        with stage_lock("train@cnn", other):
            pass
    with stage_lock("train@cnn", tmp_path):  # released
        pass


def test_stage_name_is_dvcs(monkeypatch: pytest.MonkeyPatch) -> None:
    from mnistlab.harness.runtime import stage_name

    def main() -> None: ...

    main.__module__ = "stages.attack"
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert stage_name(main, ["--form", "fgsm", "--model=cnn_bn", "--data", "d"]) == (
        "attack@fgsm-cnn_bn"
    )
    main.__module__ = "stages.download"
    assert stage_name(main, ["--out", "x"]) == "download"
    monkeypatch.setenv("DVC_STAGE", "train@cnn_adv")
    assert stage_name(main, []) == "train@cnn_adv"


def test_watchdog_stops_a_process_whose_parent_dies(tmp_path: Path) -> None:
    """Without prctl's help (the race it covers): the watchdog alone sees the new parent."""
    code = textwrap.dedent(
        """
        import os, sys, time
        from mnistlab.harness import runtime, supervision
        supervision.set_parent_death_signal = lambda sig=0: False  # watchdog only
        @runtime.stage_main
        def main(argv=None):
            print(os.getpid(), flush=True)
            time.sleep(60)
        main([])
        """
    )
    # sh starts python in the background and exits as soon as python has printed its pid
    # (from inside the stage: its watchdog is watching sh): python's parent dies.
    wait = 'while [ ! -s "$1" ]; do sleep 0.05; done'
    proc = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -c "$0" > "$1" 2>&1 & {wait}', code, tmp_path / "o"],
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0
    deadline = time.time() + 60  # a guard: the watchdog looks every second or so
    while "interrupted" not in (tmp_path / "o").read_text() and time.time() < deadline:
        time.sleep(0.2)
    out = (tmp_path / "o").read_text()
    assert "parent process" in out and "interrupted" in out, out
    pid = int(out.split()[0])
    # "interrupted" is logged before the clean-up ends: give the process time to exit
    # (gone, or a zombie whose cmdline reads empty)
    cmdline = Path(f"/proc/{pid}/cmdline")
    while cmdline.exists() and cmdline.read_bytes() and time.time() < deadline + 20:
        time.sleep(0.2)
    assert not cmdline.exists() or not cmdline.read_bytes()


def test_sqlite_busy_timeout_is_configurable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MNISTLAB_SQLITE_BUSY_TIMEOUT (seconds) replaces the busy timeout MLflow sets on each
    SQLite session; unset, MLflow's own 20 s stands; a bad value is one TrackingError."""
    import sqlalchemy
    from mlflow.store.db.utils import _get_managed_session_maker
    from sqlalchemy.orm import sessionmaker

    from mnistlab.core.errors import TrackingError
    from mnistlab.harness.tracking_store import apply_busy_timeout

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # MLflow's own session factory: it runs `PRAGMA busy_timeout = 20000` on each session
    session = _get_managed_session_maker(sessionmaker(bind=engine), "sqlite")

    def busy_ms() -> int:
        with session() as s:
            return s.execute(sqlalchemy.text("PRAGMA busy_timeout")).scalar()

    monkeypatch.delenv(BUSY_TIMEOUT_ENV, raising=False)
    apply_busy_timeout()
    assert busy_ms() == 20000
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "2.5")
    apply_busy_timeout()
    assert busy_ms() == 2500
    monkeypatch.setenv(BUSY_TIMEOUT_ENV, "0")  # read at each session
    assert busy_ms() == 0
    monkeypatch.delenv(BUSY_TIMEOUT_ENV)
    assert busy_ms() == 20000
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv(BUSY_TIMEOUT_ENV, bad)
        with pytest.raises(TrackingError, match=f"{BUSY_TIMEOUT_ENV}='{bad}': not a number"):
            apply_busy_timeout()
        assert busy_ms() == 20000  # a session never fails for it
    engine.dispose()


def test_tracking_failures_are_told_apart_from_bugs() -> None:
    from mlflow.exceptions import MlflowException

    from mnistlab.harness.runtime import failure_message, is_tracking_failure

    assert is_tracking_failure(MlflowException("database is locked"))
    assert not is_tracking_failure(ValueError("a bug"))
    assert failure_message("x", ValueError("a bug")) is None


def test_swapped_checkpoint_and_foreign_weights_are_one_line(tmp_path: Path) -> None:
    import torch

    from helpers.study import PARAMS, build_model
    from helpers.study import save as save_checkpoint
    from mnistlab.core.errors import CheckpointError
    from mnistlab.core.models import load_checkpoint

    save_checkpoint(tmp_path / "bn.pt", build_model("cnn_bn"), "cnn_bn", {})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "bn.pt", expected="cnn")
    assert "holds model 'cnn_bn', expected 'cnn'" in str(info.value)
    # a checkpoint that names cnn (and its architecture) but holds cnn_bn's weights
    state = torch.load(tmp_path / "bn.pt", weights_only=True)
    state["model"], state["arch_args"] = "cnn", dict(PARAMS.models["cnn"].arch_args)
    torch.save(state, tmp_path / "liar.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "liar.pt", expected="cnn")
    message = str(info.value)
    assert "weights do not fit model 'cnn': unexpected conv1.bn.weight" in message
    assert "\n" not in message


def test_a_swallowed_sigterm_is_delivered_again(tmp_path: Path) -> None:
    """SIGTERM handled inside a __del__ raises where Python drops the exception; the
    watchdog sends it again, so the stage still stops, without a traceback."""
    code = textwrap.dedent(
        """
        import os, signal, time
        from mnistlab.harness import runtime

        class Dropper:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs here, in __del__
                    pass

        @runtime.stage_main
        def main(argv=None):
            Dropper()
            time.sleep(30)
            print("not interrupted", flush=True)

        main([])
        """
    )
    # No clock: had the watchdog not sent it again, the sleep would run its 30 s out and
    # print "not interrupted" (the timeout is a hang guard).
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == EXIT_INTERRUPTED, proc.stderr
    assert "not interrupted" not in proc.stdout
    assert "interrupted; no partial outputs were kept" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_tracking_error_after_outputs_says_they_were_written(tmp_path: Path) -> None:
    from mnistlab.core import files
    from mnistlab.core.errors import TrackingError
    from mnistlab.harness import runtime

    files.forget_written()
    assert runtime.failure_message("s", TrackingError("store unreachable")) is None
    files.write_json(tmp_path / "m.json", {"a": 1})
    try:
        message = runtime.failure_message("s", TrackingError("store is read-only"))
    finally:
        files.forget_written()
    assert message is not None
    assert message.startswith("s: outputs were written but MLflow logging failed: store is")


@slow
def test_corrupt_cache_object_is_named_and_repro_restores_it(pipeline_copy: Path) -> None:
    """A damaged object in the DVC cache (disk fault, a bad copy) is never checked out:
    `dvc status` and `dvc checkout` name the output, nothing is written, and `dvc repro`
    recomputes the same bytes."""
    repo = pipeline_copy
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (out,) = [o for o in lock["stages"]["train@cnn"]["outs"] if o["path"] == "models/cnn.pt"]
    md5 = out["md5"]
    obj = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    blob = obj.read_bytes()
    obj.unlink()  # hard-linked with the session's build: never write through the link
    obj.write_bytes(blob[:-64] + bytes(64))  # same size, other bytes
    (repo / "models" / "cnn.pt").unlink()

    status = run(["dvc", "status", "train@cnn"], cwd=repo).stdout
    assert "not in cache" in status and "models/cnn.pt" in status, status
    proc = run(["dvc", "checkout", "models/cnn.pt"], cwd=repo, check=False)
    assert proc.returncode != 0 and "models/cnn.pt" in proc.stderr, proc.stderr[-2000:]
    assert not (repo / "models" / "cnn.pt").exists()  # the damaged bytes never came out

    out_ = run(["dvc", "repro", "train@cnn"], cwd=repo).stdout
    assert "Running stage 'train@cnn'" in out_
    assert (repo / "models" / "cnn.pt").read_bytes() == blob  # deterministic training
    assert obj.read_bytes() == blob
