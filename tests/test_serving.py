"""`make serve`: MLflow's scoring server behind our guard, against a real registered model.

Unit tests check the request validation alone; the slow ones run `make serve` once, in
a tracked copy of the tiny build (the model its `dvc repro` trained and registered as
``mnist-cnn_bn@workspace``), check that it scores like the checkpoint and send it bad
requests over HTTP: each gets a short 400/413/415 that never echoes the body, and the
server keeps classifying valid requests. They share that one server: one pytest-xdist
worker runs the module (``xdist_group("serving")``).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from helpers.pipeline import TinyBuild
from helpers.runs import Server, free_port, running_server, start_server
from helpers.serving import make_serve_command

sys.path.insert(0, str(REPO))  # `serving` lives beside `src`, as `stages` does
from serving.validate import FINITE, NUMBERS, RANGE, SHAPE, InputError, parse_request  # noqa: E402

# one worker runs the module, so `make serve` starts once per run
pytestmark = pytest.mark.xdist_group("serving")

MARKER = "SECRET-PAYLOAD-7f3a"  # put in bad requests; must never come back
MAX_BYTES = 1 << 20
MODEL_URI = "models:/mnist-cnn_bn@workspace"  # what `make serve MODEL=cnn_bn` serves


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


# ------------------------------------------------------------------ starting a server


def _http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]


def test_a_server_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    """A port chosen free can be taken before the server binds it: start_server then
    starts it again on another (here the first port is held by the test's own socket)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with running_server(
            _http_server, "/", tmp_path / "log", cwd=tmp_path, ports=[busy, free_port()]
        ) as server:
            assert server.alive()
            assert not server.url.endswith(f":{busy}")
            with urllib.request.urlopen(server.url, timeout=10) as resp:
                assert resp.status == 200
    assert not server.alive()  # stopped on leaving


def test_a_server_that_fails_otherwise_is_not_restarted(tmp_path: Path) -> None:
    tried: list[int] = []

    def broken(port: int) -> list[str]:
        tried.append(port)
        return [sys.executable, "-c", "raise SystemExit('no model to serve')"]

    with pytest.raises(AssertionError, match="no model to serve"):
        start_server(broken, "/", tmp_path / "log", cwd=tmp_path)
    assert len(tried) == 1


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def served_repo(tiny_build: TinyBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tracked copy of the tiny build: its checkpoints and its MLflow store, whose
    registry holds the models its `dvc repro` trained (``mnist-<model>@workspace``)."""
    return tiny_build.copy(tmp_path_factory.mktemp("serve") / "repo", runs=True)


@pytest.fixture(scope="module")
def server(served_repo: Path) -> Iterator[Server]:
    """`make serve MODEL=cnn_bn` in the copy, as a user runs it after `make repro`:
    ``mnist-cnn_bn@workspace`` from the copy's own store, on a free loopback port."""

    def command(port: int) -> list[str]:
        # checked to run nothing but the server (never a venv rebuild): helpers.serving
        return make_serve_command(
            served_repo, MODEL="cnn_bn", SERVE_PORT=str(port), MAX_REQUEST_BYTES=str(MAX_BYTES)
        )

    # without MLFLOW_TRACKING_URI the Makefile's store is the copy's own mlflow.db
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = served_repo.parent / "serve.log"
    with running_server(command, "/ping", log, cwd=served_repo, env=env) as srv:
        yield srv


def _post(url: str, body: bytes, ctype: str = "application/json") -> tuple[int, bytes]:
    req = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.slow
def test_served_model_scores_like_the_checkpoint(server: Server, served_repo: Path) -> None:
    import torch

    from mnistlab.core.models import load_checkpoint

    images = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    status, body = _post(server.url, _body(images.tolist()))
    assert status == 200, body[:300]
    logits = np.asarray(json.loads(body)["predictions"], dtype=np.float32)
    # the checkpoint the train stage wrote beside the model it registered
    net, _ = load_checkpoint(served_repo / "models/cnn_bn.pt", expected="cnn_bn")
    with torch.inference_mode():
        expected = net(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)


@pytest.mark.slow
def test_make_serve_classifies_posted_images(server: Server, served_repo: Path) -> None:
    import mlflow

    from mnistlab.core import mnist as data

    images, labels = data.load_mnist(served_repo / "data/MNIST/raw", "test")
    x = (images[:20].unsqueeze(1).float() / 255).numpy()
    status, body = _post(server.url, _body(x.tolist()))
    assert status == 200, body[:300]
    digits = np.asarray(json.loads(body)["predictions"]).argmax(1)
    assert digits.shape == (20,)
    # the served classes are the logged model's own on the same raw pixels: the server
    # neither rescales nor reorders (a preprocessing slip would pass "mostly right")
    mlflow.set_tracking_uri(f"sqlite:///{served_repo}/mlflow.db")
    direct = np.asarray(mlflow.pyfunc.load_model(MODEL_URI).predict(x)).argmax(1)
    assert digits.tolist() == direct.tolist()
    assert int((digits == labels[:20].numpy()).sum()) >= 10  # 1 epoch on 2000 images


@pytest.mark.slow
def test_bad_requests_get_short_400s_and_the_server_lives_on(server: Server) -> None:
    for name, (body, needle) in BAD.items():
        status, answer = _post(server.url, body)
        assert status == 400, (name, status, answer[:300])
        assert len(answer) < 300 and MARKER.encode() not in answer, (name, answer)
        assert needle in json.loads(answer)["message"], (name, answer)
    status, answer = _post(server.url, VALID, ctype="text/csv")
    assert status == 415 and len(answer) < 300
    assert server.alive()
    status, body = _post(server.url, VALID)  # still classifying
    assert status == 200 and len(json.loads(body)["predictions"]) == 2


def _raw_request(url: str, head: str, body_blocks: Iterable[bytes]) -> tuple[bytes, int]:
    """Send a request by hand and read the response head. The body goes block by block
    until the answer (or the server's close) arrives, so the server may answer before
    the body is complete. Returns the head and how many body bytes went before it."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    # 60 s: only a hang guard (a server that waited for the whole body would never answer)
    with socket.create_connection((host, int(port)), timeout=60) as s:
        # a small send buffer: what we count as sent is close to what the server was offered
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
        s.sendall(head.encode())
        for block in body_blocks:
            if select.select([s], [], [], 0)[0]:
                break  # the answer (or the close) is here: send no more
            try:
                s.sendall(block)
            except OSError:  # the server answered and closed while we were still sending
                break
            sent += len(block)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer, sent


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_20_mb_body_gets_413_before_it_is_sent(server: Server, framing: str) -> None:
    size, block = 20 << 20, b"[" * (1 << 16)
    start = "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if framing == "content-length":
        # 20 MB declared, at most 64 KB sent, then we wait: the answer must not need the
        # rest (a server that waited for it would leave us waiting until the hang guard)
        head, _ = _raw_request(server.url, start + f"Content-Length: {size}\r\n\r\n", [block])
    else:
        # a body that never says its size: the server must answer once it passes the cap,
        # not take all 20 MB (socket buffers let us run ahead of it: 1.3 MB sent, measured)
        blocks = (b"%x\r\n%s\r\n" % (len(block), block) for _ in range(size // len(block)))
        head, sent = _raw_request(server.url, start + "Transfer-Encoding: chunked\r\n\r\n", blocks)
        assert MAX_BYTES < sent < size // 2, sent
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert server.alive()
    status, _ = _post(server.url, VALID)
    assert status == 200


@pytest.mark.slow
def test_missing_alias_is_one_line(served_repo: Path) -> None:
    uri = "models:/mnist-cnn_bn@missing"  # a registered model, an alias it does not have
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{served_repo}/mlflow.db"}
    proc = subprocess.run(
        [sys.executable, "-m", "serving", "--model-uri", uri],
        cwd=served_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and uri in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
