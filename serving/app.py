"""MLflow's scoring app behind a guard: a body-size cap and input validation.

:class:`GuardedApp` is plain ASGI around the FastAPI app that ``mlflow models serve``
runs (``mlflow.pyfunc.scoring_server.init``). For ``POST /invocations`` it

- answers 413 to a body over ``max_bytes`` without reading it (``Content-Length``) or
  as soon as a streamed (chunked) body passes the cap, so nothing large is parsed;
- answers 415 to anything but JSON, 400 to JSON that :func:`serving.validate.parse_request`
  rejects (shape, types, NaN/Infinity, range), with a short fixed message;
- hands a valid body on to MLflow, and replaces any error MLflow answers with a short
  message of ours: MLflow's own messages quote the request back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from serving.validate import InputError, parse_request

log = logging.getLogger("serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BYTES = 4 << 20  # ~1,300 images as JSON text; raise it with --max-bytes
INVOCATIONS = "/invocations"
_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    504: "TIMEOUT",
}
_UPSTREAM = {504: "scoring took too long"}


def error_body(status: int, message: str) -> bytes:
    """The JSON error MLflow's server uses (``error_code``, ``message``), ours short."""
    code = _CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
    return json.dumps({"error_code": code, "message": message}).encode()


async def send_error(send: Send, status: int, message: str) -> None:
    body = error_body(status, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class GuardedApp:
    """ASGI middleware: cap, validate and sanitise ``POST /invocations`` for ``app``.

    Args:
        app: the MLflow scoring app (any ASGI app).
        max_bytes: the largest request body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != INVOCATIONS or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        too_big = f"request body over the {self.max_bytes} byte limit"
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await send_error(send, 400, "bad Content-Length")
                return
            if int(length) > self.max_bytes:
                await send_error(send, 413, too_big)  # unread: the body never arrives
                return
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media != b"application/json":
            await send_error(send, 415, "send application/json")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:  # a chunked body that never said its size
                await send_error(send, 413, too_big)
                return
        try:
            images = parse_request(bytes(body))
        except InputError as err:
            await send_error(send, err.status, err.message)
            return
        log.debug("scoring %d images", len(images))
        await self.app(scope, _replay(bytes(body), receive), _sanitised(send))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the body already read, then waits on the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _sanitised(send: Send) -> Send:
    """A ``send`` that replaces the body of any error response with a short message."""
    status = 200

    async def wrapped(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            if status < 400:
                await send(message)
            return
        if status < 400:
            await send(message)
        elif not message.get("more_body", False):
            log.warning("the model answered %d; sent a short error instead", status)
            text = _UPSTREAM.get(status, "the model could not score this request")
            await send_error(send, status, text)

    return wrapped


def build_app(model_uri: str, max_bytes: int = DEFAULT_MAX_BYTES) -> GuardedApp:
    """Load ``model_uri`` (e.g. ``models:/mnist-cnn_bn@workspace``) behind the guard."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(model_uri)
    return GuardedApp(scoring_server.init(model), max_bytes)
