"""Typed, frozen, validated view of ``params.yaml``.

``params.yaml`` is the one place a default lives: every key is required here, so a
value can never silently come from the code instead of the file.

``load_params`` is the one way in: it rejects unknown keys, wrong types and
out-of-range values with a one-line :class:`ParamsError` naming the full key
(``train.epocks: unknown key``), before any stage computes or writes anything.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from mnistlab.core.errors import ParamsError
from mnistlab.core.params_eval import (
    AttributionParams,
    EvaluateParams,
    TransferParams,
    VisualizeParams,
)
from mnistlab.core.params_train import DataParams, ModelSpec, TrainParams, train_overrides
from mnistlab.core.params_types import NAME_PATTERN, _Section

# The schema of `attacks.<form>`, one module per form, imported by name: a stage's cache
# key holds only the form it runs (the dependency test formats this with its --form).
FORM_PARAMS = "mnistlab.core.attack_params.{form}"
_SRC = Path(__file__).resolve().parents[1]  # src/mnistlab


def known_forms() -> list[str]:
    """The attack forms the code provides: a schema in ``core/attack_params/<form>.py``
    and a package ``attacks/<form>/`` (found on disk, nothing imported)."""
    return sorted(
        p.stem
        for p in (_SRC / "core" / "attack_params").glob("*.py")
        if p.stem != "__init__" and (_SRC / "attacks" / p.stem / "__init__.py").is_file()
    )


class Sections(dict):
    """``attacks``: each form's validated section, by name (``p.attacks.pgd`` or
    ``p.attacks["pgd"]``), in the order of ``params.yaml``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"attacks.{name}: not in params.yaml") from None


# params.yaml is a few KB; a file over 1 MiB is a mistake (or an attack on the parser).
MAX_PARAMS_BYTES = 1 << 20


class Params(_Section):
    seed: Annotated[int, Field(ge=0, lt=2**32)]  # numpy seeds take 32 bits
    device: Literal["auto", "cpu", "cuda"]
    # torch threads per process: "auto" = the cores this process may use / DVC queue workers
    threads: Literal["auto"] | Annotated[int, Field(gt=0, le=1024)]
    data: DataParams
    train: TrainParams
    # The study's models, by name: each an architecture with its keyword arguments and
    # its overrides of any `train` key (e.g. models.cnn_bn.lr: 0.005).
    models: Annotated[dict[str, ModelSpec], Field(min_length=1)]  # type: ignore[valid-type]
    evaluate: EvaluateParams
    visualize: VisualizeParams
    attribution: AttributionParams
    # The attack forms the study runs, by name, each with its own section.
    attacks: Annotated[dict[str, Any], Field(min_length=1)]
    transfer: TransferParams

    @field_validator("models", "attacks", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        for name in value if isinstance(value, dict) else ():
            if not (isinstance(name, str) and re.match(NAME_PATTERN, name)):
                raise ValueError(
                    f"{name}: not a valid name (a letter, then letters, digits or _; "
                    "it becomes part of stage and file names)"
                )
        return value

    @field_validator("attacks", mode="after")
    @classmethod
    def _forms(cls, value: dict[str, Any]) -> Sections:
        """Each form's section validated by its own schema (``FORM_PARAMS``)."""
        known = known_forms()
        out = Sections()
        for form, raw in value.items():
            if form not in known:
                raise ValueError(
                    f"{form}: unknown attack form (the code provides: {', '.join(known)})"
                )
            schema = importlib.import_module(FORM_PARAMS.format(form=form)).Params
            if not isinstance(raw, dict):
                raise ValueError(f"{form}: expected a mapping of its params")
            try:
                out[form] = schema(**raw)
            except ValidationError as err:
                raise ValueError(_format(err, prefix=form)) from None
        return out

    @field_validator("threads", mode="before")
    @classmethod
    def _threads_auto_or_count(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and 0 < value <= 1024):
            return value
        raise ValueError(f"must be 'auto' or a number of threads from 1 to 1024 (got {value!r})")

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> Params:
        for name in self.models:
            self.train_for(name)  # raises ValueError on a bad override
        return self

    def model(self, name: str) -> Any:
        """The entry ``models.<name>``.

        Raises:
            ParamsError: ``name`` is not a model of ``params.yaml``.
        """
        if name not in self.models:
            raise ParamsError(
                f"--model {name}: not a model of params.yaml (models: {', '.join(self.models)})"
            )
        return self.models[name]

    def form(self, name: str) -> BaseModel:
        """The section ``attacks.<name>``.

        Raises:
            ParamsError: ``name`` is not an attack form of ``params.yaml``.
        """
        if name not in self.attacks:
            raise ParamsError(
                f"--form {name}: not an attack form of params.yaml "
                f"(attacks: {', '.join(self.attacks)})"
            )
        return self.attacks[name]

    def label(self, name: str) -> str:
        """How the report and README name model ``name``: its ``label``, else the name."""
        return self.model(name).label or name

    def train_for(self, model: str) -> TrainParams:
        """The `train` section with the overrides under ``models.<model>`` applied."""
        merged = {**self.train.model_dump(), **train_overrides(self.model(model))}
        try:
            return TrainParams(**merged)
        except ValidationError as err:
            raise ValueError(_format(err, prefix=f"models.{model}")) from None


def _short_repr(value: Any) -> str:
    """A bounded repr: YAML aliases can make a small file hold an astronomically big list."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict = 2, 6, 6
    short.maxstring = short.maxother = short.maxlong = 60
    return short.repr(value)


def _format(err: ValidationError, prefix: str = "") -> str:
    """Render pydantic errors as `full.key: reason`, joined on one line."""
    parts = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"] if x != "[key]"]
        key = ".".join(([prefix] if prefix else []) + loc)
        if e["type"] == "extra_forbidden":
            reason = "unknown key"
        elif e["type"] == "missing":
            reason = "missing key"
        else:
            reason = e["msg"]
            if e["type"] == "value_error":
                # Our validators raise "sub.key: reason", relative to where they sit.
                reason = reason.removeprefix("Value error, ")
                sub, _, rest = reason.partition(": ")
                if rest:
                    key, reason = (f"{key}.{sub}" if key else sub), rest
            elif "input" in e and not isinstance(e["input"], dict):
                reason = f"{reason} (got {_short_repr(e['input'])})"
        parts.append(f"{key}: {reason}" if key else reason)
    return "; ".join(parts)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping.

    Raises:
        ParamsError: one line naming ``source`` and every offending key.
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params(**raw)
    except ValidationError as err:
        raise ParamsError(f"{source}: {_format(err)}") from None


def read_params_text(path: str | Path, max_bytes: int = MAX_PARAMS_BYTES) -> str:
    """The text of a params file: at most ``max_bytes``, UTF-8, checked before parsing.

    Raises:
        ParamsError: the file is missing or unreadable, larger than ``max_bytes``
            (checked before reading it whole), or not UTF-8.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise ParamsError(_too_big(path, max_bytes, f"{size} bytes"))
            data = f.read(max_bytes + 1)  # a pipe or /proc file may say size 0
    except OSError as err:
        raise ParamsError(f"{path}: cannot read params file ({err.strerror})") from None
    if len(data) > max_bytes:
        raise ParamsError(_too_big(path, max_bytes, f"more than {max_bytes} bytes"))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ParamsError(
            f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at line {line})"
        ) from None


def _too_big(path: Path, max_bytes: int, size: str) -> str:
    return f"{path}: {size}, over the {max_bytes // 1024} KiB limit for a params file"


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate ``params.yaml``.

    Raises:
        ParamsError: the file is missing, too large, not UTF-8, not valid YAML, or
            holds invalid params.
    """
    path = Path(path)
    text = read_params_text(path)
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except RecursionError:
        raise ParamsError(f"{path}: malformed YAML: nested too deeply") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ParamsError(f"{path}: malformed YAML{where}: {problem}") from None
    return parse_params(raw, str(path))


def flatten(section: BaseModel | dict, prefix: str = "") -> dict[str, Any]:
    """Flatten a (nested) params section to ``{"a.b.c": value}`` for MLflow."""
    data = section.model_dump() if isinstance(section, BaseModel) else section
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, dict):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def deep_merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in, as ``dvc exp run -S`` would set them: nested
    dicts merge key by key, anything else replaces. Neither argument is modified."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
