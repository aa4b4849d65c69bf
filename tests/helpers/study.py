"""The study as params.yaml lists it: its models and attack forms, for tests that walk them.

Tests derive every list from here (``tests/test_names.py`` fails on a hand-kept one), so
a model or form added to params.yaml is tested without editing a test.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mnistlab.core.config import Params, parse_params
from mnistlab.core.models import model_from_params

REPO = Path(__file__).resolve().parents[2]
PARAMS: Params = parse_params(yaml.safe_load((REPO / "params.yaml").read_text()))

MODELS: tuple[str, ...] = tuple(PARAMS.models)
FORMS: tuple[str, ...] = tuple(PARAMS.attacks)
# Trained without / against an adversary.
NATURAL: tuple[str, ...] = tuple(m for m in MODELS if PARAMS.train_for(m).adversarial is None)
ADVERSARIAL: tuple[str, ...] = tuple(m for m in MODELS if m not in NATURAL)
# Models whose architecture has BatchNorm (where nondeterminism and eval mode matter).
BATCH_NORM: tuple[str, ...] = tuple(
    m for m in MODELS if PARAMS.models[m].arch_args.get("batch_norm") is True
)


def build_model(name: str):
    """A fresh, randomly initialised model ``name`` of params.yaml."""
    return model_from_params(PARAMS, name)


def save(path: Path, model, name: str, params: dict | None = None) -> None:
    """``save_checkpoint`` for model ``name`` of params.yaml (its architecture recorded)."""
    from mnistlab.core.models import save_checkpoint

    spec = PARAMS.models[name]
    save_checkpoint(path, model, name, params or {}, arch=spec.arch, arch_args=spec.arch_args)
