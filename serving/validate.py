"""What a served model accepts: raw pixels in [0, 1], shaped ``(N, 1, 28, 28)``.

MLflow's scoring server would accept ``NaN``, booleans as numbers and any shape, and
its error messages quote the request back. Every check here answers with a short,
fixed message that never contains the request.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

IMAGE_SHAPE = (1, 28, 28)
INPUT_KEYS = ("inputs", "instances")  # MLflow's two names for a tensor input

EXPECTED = 'expected a JSON object {"inputs": [...]} of images shaped (N, 1, 28, 28)'
SHAPE = "inputs must be shaped (N, 1, 28, 28): a non-empty list of 1x28x28 images"
NUMBERS = "inputs must hold only numbers (no strings, booleans or nulls)"
FINITE = "inputs must be finite numbers (no NaN or Infinity)"
RANGE = "inputs must be raw pixels in [0, 1] (divide 0-255 values by 255)"


class InputError(ValueError):
    """A request the model must not score; ``str(err)`` is safe to send back."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _NonFinite(Exception):
    pass


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN, Infinity and -Infinity unless told otherwise.
    raise _NonFinite(name)


def parse_request(body: bytes) -> np.ndarray:
    """Validate a JSON request body and return its images as float32 ``(N, 1, 28, 28)``.

    Raises:
        InputError: the body is not UTF-8 JSON of that form; the message is fixed text.
    """
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except _NonFinite:
        raise InputError(FINITE) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InputError("the request body is not valid UTF-8 JSON") from None
    if not isinstance(obj, dict) or len(obj) != 1 or next(iter(obj)) not in INPUT_KEYS:
        raise InputError(EXPECTED)
    return to_images(next(iter(obj.values())))


def to_images(value: Any) -> np.ndarray:
    """Check nested lists as ``(N, 1, 28, 28)`` numbers in [0, 1]; return float32.

    Raises:
        InputError: wrong nesting or sizes, a non-number (``bool`` included, though
            Python counts it as an int), a non-finite number, or one outside [0, 1].
    """
    channels, height, width = IMAGE_SHAPE
    if not isinstance(value, list) or not value:
        raise InputError(SHAPE)
    for image in value:
        if not isinstance(image, list) or len(image) != channels:
            raise InputError(SHAPE)
        for plane in image:
            if not isinstance(plane, list) or len(plane) != height:
                raise InputError(SHAPE)
            for row in plane:
                if not isinstance(row, list) or len(row) != width:
                    raise InputError(SHAPE)
                for v in row:
                    kind = type(v)
                    if kind is not float and kind is not int:
                        raise InputError(SHAPE if kind is list or kind is dict else NUMBERS)
    try:
        array = np.array(value, dtype=np.float64)
    except OverflowError:  # an integer too large for a float
        raise InputError(FINITE) from None
    if not np.isfinite(array).all():  # 1e999 parses as inf
        raise InputError(FINITE)
    if array.min() < 0.0 or array.max() > 1.0:
        raise InputError(RANGE)
    return array.astype(np.float32)
