"""`make serve`: MLflow's scoring server behind our guard, against a real registered model.

Unit tests check the request validation alone; the slow ones run `make serve` on a
model logged exactly as the train stage logs it (``StageRun.log_model``) and send
it bad requests over HTTP: each gets a short 400/413/415 that never echoes the body,
and the server keeps classifying valid requests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from helpers.runs import free_port
from helpers.serving import make_serve_command

sys.path.insert(0, str(REPO))  # `serving` lives beside `src`, as `stages` does
from serving.validate import FINITE, NUMBERS, RANGE, SHAPE, InputError, parse_request  # noqa: E402

MARKER = "SECRET-PAYLOAD-7f3a"  # put in bad requests; must never come back
MAX_BYTES = 1 << 20


def _image(value: float | str = 0.5) -> list:
    return [[[value] * 28 for _ in range(28)]]


def _body(images: object, key: str = "inputs") -> bytes:
    return json.dumps({key: images}).encode()


VALID = _body([_image(), _image(0.0)])

BAD = {
    "nan": (VALID.replace(b"0.5", b"NaN", 1), FINITE),
    "infinity": (VALID.replace(b"0.5", b"-Infinity", 1), FINITE),
    "overflowing float": (VALID.replace(b"0.5", b"1e999", 1), FINITE),
    "huge int": (VALID.replace(b"0.5", b"9" * 400, 1), FINITE),
    "above 1": (VALID.replace(b"0.5", b"1.5", 1), RANGE),
    "below 0": (VALID.replace(b"0.5", b"-0.1", 1), RANGE),
    "0-255 pixels": (_body([_image(255)]), RANGE),
    "string": (VALID.replace(b"0.5", f'"{MARKER}"'.encode(), 1), NUMBERS),
    "boolean": (VALID.replace(b"0.5", b"true", 1), NUMBERS),
    "null": (VALID.replace(b"0.5", b"null", 1), NUMBERS),
    "no channel axis": (_body([[[0.5] * 28] * 28]), SHAPE),
    "three channels": (_body([_image() * 3]), SHAPE),
    "27 columns": (_body([[[[0.5] * 27] * 28]]), SHAPE),
    "ragged": (_body([_image(), [[[0.5] * 28] * 27]]), SHAPE),
    "too deep": (VALID.replace(b"0.5", b"[0.5]", 1), SHAPE),
    "empty batch": (_body([]), SHAPE),
    "a string for inputs": (_body(MARKER), SHAPE),
    "not json": (f"{MARKER} {{".encode(), "not valid UTF-8 JSON"),
    "not utf-8": (b'{"inputs": "\xff\xfe"}', "not valid UTF-8 JSON"),
    "other key": (_body([_image()], key=MARKER), "expected a JSON object"),
    "extra key": (VALID[:-1] + f', "{MARKER}": 1}}'.encode(), "expected a JSON object"),
    "a list": (json.dumps([_image()]).encode(), "expected a JSON object"),
}


def test_valid_request_parses_to_float32_images() -> None:
    images = parse_request(VALID)
    assert images.shape == (2, 1, 28, 28) and images.dtype == np.float32
    assert parse_request(_body([_image(1)], key="instances")).max() == 1.0  # ints are numbers


@pytest.mark.parametrize("name", list(BAD))
def test_bad_request_is_rejected_with_a_fixed_message(name: str) -> None:
    body, needle = BAD[name]
    with pytest.raises(InputError) as info:
        parse_request(body)
    assert needle in info.value.message
    assert MARKER not in info.value.message and len(info.value.message) < 120


# --------------------------------------------------------------------------- the server


LOG_MODEL = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from helpers.study import build_model
    from mnistlab.harness.tracking import stage_run

    root = Path(sys.argv[1])
    torch.manual_seed(0)
    model = build_model("cnn_bn").eval()
    torch.save(model.state_dict(), root / "state.pt")
    # The train stage's own path: a stage run that logs, registers and aliases (@workspace).
    with stage_run("train@cnn_bn", {}) as run:
        run.log_model(model, "mnist-cnn_bn", root / "state.pt")
    """
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tracking store holding an untrained cnn_bn, logged as `train@cnn_bn` logs it."""
    root = tmp_path_factory.mktemp("serve-store")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    tests = str(Path(__file__).resolve().parent)  # helpers.study: the model of params.yaml
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", LOG_MODEL, str(root)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return root


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`make serve MODEL=cnn_bn` (alias `workspace`) on a free loopback port."""
    port = free_port()
    cmd = make_serve_command(
        REPO,
        MODEL="cnn_bn",
        MLFLOW_URI=f"sqlite:///{store}/mlflow.db",
        SERVE_PORT=str(port),
        MAX_REQUEST_BYTES=str(MAX_BYTES),
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"make serve exited: {proc.stderr.read()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "the server did not come up"
                time.sleep(0.5)
        yield url, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _post(url: str, body: bytes, ctype: str = "application/json") -> tuple[int, bytes]:
    req = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _expected_logits(store: Path, images: np.ndarray) -> np.ndarray:
    import torch

    from helpers.study import build_model

    model = build_model("cnn_bn")
    model.load_state_dict(torch.load(store / "state.pt", weights_only=True))
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(images)).numpy()


@pytest.mark.slow
def test_served_model_scores_like_the_checkpoint(server, store: Path) -> None:
    url, _ = server
    images = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    status, body = _post(url, _body(images.tolist()))
    assert status == 200, body[:300]
    logits = np.asarray(json.loads(body)["predictions"], dtype=np.float32)
    np.testing.assert_allclose(logits, _expected_logits(store, images), atol=1e-4)


@pytest.mark.slow
def test_bad_requests_get_short_400s_and_the_server_lives_on(server, store: Path) -> None:
    url, proc = server
    for name, (body, needle) in BAD.items():
        status, answer = _post(url, body)
        assert status == 400, (name, status, answer[:300])
        assert len(answer) < 300 and MARKER.encode() not in answer, (name, answer)
        assert needle in json.loads(answer)["message"], (name, answer)
    status, answer = _post(url, VALID, ctype="text/csv")
    assert status == 415 and len(answer) < 300
    assert proc.poll() is None
    status, body = _post(url, VALID)  # still classifying
    assert status == 200 and len(json.loads(body)["predictions"]) == 2


def _raw_request(url: str, headers: str, body_blocks: Iterator[bytes]) -> tuple[bytes, float]:
    """Send a request by hand (the body as blocks); the response head and seconds taken."""
    host, port = url.removeprefix("http://").split(":")
    start = time.time()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(headers.encode())
        try:
            for block in body_blocks:
                s.sendall(block)
        except OSError:  # the server answered and closed while we were still sending
            pass
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    return head, time.time() - start


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_20_mb_body_gets_413_quickly(server, framing: str) -> None:
    url, proc = server
    size, block = 20 << 20, b"[" * (1 << 16)
    start = "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if framing == "content-length":
        # Only 64 KB of the declared 20 MB is sent: the answer must not wait for the rest.
        head, seconds = _raw_request(url, start + f"Content-Length: {size}\r\n\r\n", iter([block]))
    else:
        blocks = (b"%x\r\n%s\r\n" % (len(block), block) for _ in range(size // len(block)))
        head, seconds = _raw_request(url, start + "Transfer-Encoding: chunked\r\n\r\n", blocks)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert seconds < 5
    assert proc.poll() is None
    status, _ = _post(url, VALID)
    assert status == 200


@pytest.mark.slow
def test_missing_alias_is_one_line(store: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
    proc = subprocess.run(
        [sys.executable, "-m", "serving", "--model-uri", "models:/mnist-cnn@workspace"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and "models:/mnist-cnn@workspace" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
