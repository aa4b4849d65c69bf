"""A stage that reads one trained model: its inputs, and the whole of it when its job is
one library call.

The checkpoint is checked against ``--model`` and MNIST is MD5-verified, both before the
stage's MLflow run opens, so a bad input fails in one line and changes nothing. How the
stage is run around this (threads, its MLflow run) is ``mnistlab.harness.runner``; this
module only calls the ``record`` it is handed, and nothing it records changes a byte.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from mnistlab.core.cli import resolve_device
from mnistlab.core.config import Params
from mnistlab.core.mnist import load_mnist
from mnistlab.core.models import load_checkpoint
from mnistlab.core.outputs import StageOutputs, write_outputs

# The command-line options of every stage that reads one trained model.
MODEL_OPTIONS = {
    "model": "model name",
    "data": "raw MNIST directory",
    "checkpoint": "checkpoint file",
}


@dataclasses.dataclass(frozen=True)
class ModelStage:
    """The inputs of a stage that reads one trained model and the test split."""

    args: Any  # the parsed command line (argparse.Namespace)
    params: Params
    device: torch.device
    model: nn.Module
    images: Tensor  # uint8 (N, 28, 28)
    labels: Tensor  # int64 (N,)


def model_inputs(args: Any, params: Params) -> ModelStage:
    """Resolve the device, load ``args.checkpoint`` (it must hold ``args.model``) and the
    test split of ``args.data``."""
    params.model(args.model)  # a model of params.yaml, or one line and exit 2
    device = resolve_device(params.device)
    model, _ = load_checkpoint(args.checkpoint, expected=args.model, device=device)
    images, labels = load_mnist(args.data, "test")  # MD5-verified before any compute
    return ModelStage(args, params, device, model, images, labels)


def run_model_stage(
    stage: str,
    compute: Callable[..., StageOutputs],
    s: ModelStage,
    record: Callable[[str, dict[str, Any]], AbstractContextManager[Any]],
    *,
    tables: tuple[str, ...] = (),
    link_model: bool = False,
    outputs: tuple[str, ...],
) -> None:
    """The whole of a per-model stage whose library call is ``compute``.

    ``compute(model, images, labels, name=, cfg=, seed=, device=)`` gets the params
    section named like the stage; its outputs go to the paths given as ``--<output>``.

    Args:
        stage: the stage (and params section) name, e.g. ``"evaluate"``.
        s: the stage's inputs (:func:`model_inputs`).
        record: ``record(run_name, {section: params})`` opens the stage's MLflow run
            (``mnistlab.harness.runner.torch_run``).
        tables: output options that are extra CSV tables (``StageOutputs.tables``).
        link_model: log the test set as the run's dataset input and link the run's
            metrics to the logged model that produced the checkpoint (evaluation).
        outputs: the stage's output options (metrics, rows, figures, arrays, the tables).
    """
    p, a = s.params, s.args
    cfg = getattr(p, stage)
    with record(f"{stage}@{a.model}", {stage: cfg}) as run:
        if link_model:
            run.log_dataset(a.data, context="evaluation")
            run.use_model(a.checkpoint)  # test metrics are linked to the model train logged
        out = compute(
            s.model, s.images, s.labels, name=a.model, cfg=cfg, seed=p.seed, device=s.device
        )
        paths = {k: getattr(a, k) for k in outputs if k not in tables}
        write_outputs(out, tables={t: getattr(a, t) for t in tables}, **paths)
        run.log_outputs(out, figures=paths.get("figures"))
