"""Params for tests: the repo's params.yaml (the one source of defaults) plus overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mnistlab.core.config import Params, deep_merge, parse_params

REPO = Path(__file__).resolve().parents[2]


def raw_params(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``params.yaml`` as a plain dict, with ``overrides`` deep-merged in."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    return deep_merge(raw, overrides or {})


def params_with(overrides: dict[str, Any] | None = None) -> Params:
    """Validated params: ``params.yaml`` with ``overrides`` deep-merged in."""
    return parse_params(raw_params(overrides))
