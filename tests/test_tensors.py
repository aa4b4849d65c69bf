"""Unit tests of the shared tensor helpers in ``mnistlab.core.tensors``."""

from __future__ import annotations

import re

import pytest
import torch

from mnistlab.core.tensors import check_inputs


def test_check_inputs_accepts_float_pixels_and_one_class_per_image() -> None:
    x, y = torch.rand(3, 1, 28, 28), torch.zeros(3, dtype=torch.long)
    check_inputs(x, y)
    check_inputs(x, y, size=28)
    check_inputs(torch.rand(2, 1, 5, 7, dtype=torch.float64), torch.zeros(2))  # any H, W


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "message"),
    [
        (torch.rand(3, 28, 28), torch.zeros(3), {}, "x must be (B, 1, H, W), got (3, 28, 28)"),
        (torch.rand(3, 2, 5, 5), torch.zeros(3), {}, "x must be (B, 1, H, W), got (3, 2, 5, 5)"),
        (
            torch.rand(3, 1, 27, 28),
            torch.zeros(3),
            {"size": 28, "names": ("images", "labels"), "batch": "N"},
            "images must be (N, 1, 28, 28), got (3, 1, 27, 28)",
        ),
        (
            torch.zeros(3, 1, 28, 28, dtype=torch.uint8),
            torch.zeros(3),
            {},
            "x must be float pixels in [0, 1], got torch.uint8",
        ),
        (torch.rand(3, 1, 28, 28), torch.zeros(2), {}, "y must be (3,), got (2,)"),
        (
            torch.rand(3, 1, 28, 28),
            torch.zeros(3, 1),
            {"names": ("images", "labels")},
            "labels must be (3,), got (3, 1)",
        ),
    ],
)
def test_check_inputs_rejects_bad_inputs(x, y, kwargs, message) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_inputs(x, y, **kwargs)
