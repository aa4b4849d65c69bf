"""How a torch stage's MLflow run is opened: the params it logs beside its own sections.

What a stage computes and writes is never here. A per-model stage's inputs come from
:func:`mnistlab.core.stage.model_inputs`, and :func:`mnistlab.core.stage.run_model_stage`
computes and writes its outputs, recording them through the run it is handed
(``functools.partial(torch_run, params)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from mnistlab.core.config import Params
from mnistlab.harness.tracking import StageRun, stage_run


def torch_sections(params: Params, sections: Mapping[str, Any]) -> dict[str, Any]:
    """The params a torch stage's run logs: ``seed``, ``device``, ``threads``, then its own
    ``sections`` (``{key: value}``, e.g. ``{"train": cfg}``)."""
    return {"seed": params.seed, "device": params.device, "threads": params.threads, **sections}


def torch_run(
    params: Params, stage: str, sections: Mapping[str, Any]
) -> AbstractContextManager[StageRun]:
    """The MLflow run of a torch stage: :func:`stage_run` with :func:`torch_sections`."""
    return stage_run(stage, torch_sections(params, sections))
