"""What a stage that reads one trained model does before it computes.

Parse ``--model``, ``--data``, ``--checkpoint`` and the stage's own options (paths come
from ``dvc.yaml``), validate params, pick the device, load the checkpoint (checked
against ``--model``) and the MD5-verified MNIST test split: all of it before the
stage's MLflow run opens, so a bad input fails in one line and changes nothing.

Every torch stage (per-model or not) starts with :func:`torch_setup` and logs
:func:`torch_sections` with its run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from mnistlab.core.config import Params, load_params
from mnistlab.core.mnist import load_mnist
from mnistlab.core.models import load_checkpoint
from mnistlab.core.outputs import StageOutputs, write_outputs
from mnistlab.core.runtime import apply_threads, parse_args, resolve_device
from mnistlab.core.tracking import stage_run


@dataclasses.dataclass(frozen=True)
class ModelStage:
    """The inputs of a stage that reads one trained model and the test split."""

    args: Any  # the parsed command line (argparse.Namespace)
    params: Params
    device: torch.device
    model: nn.Module
    images: Tensor  # uint8 (N, 28, 28)
    labels: Tensor  # int64 (N,)


def torch_setup() -> tuple[Params, torch.device]:
    """Validated params, torch's thread pools sized from them (before any torch work), and
    the resolved device."""
    params = load_params()
    apply_threads(params.threads)  # before any torch work
    return params, resolve_device(params.device)


def torch_sections(params: Params, sections: dict[str, Any]) -> dict[str, Any]:
    """The params a torch stage's run logs: ``seed``, ``device``, ``threads``, then its own
    ``sections`` (``{key: value}``, e.g. ``{"train": cfg}``)."""
    return {"seed": params.seed, "device": params.device, "threads": params.threads, **sections}


def model_stage(doc: str | None, argv: list[str] | None, **options: str) -> ModelStage:
    """Everything a per-model stage needs before it computes.

    Args:
        doc: the stage's docstring, for ``--help``.
        argv: the command line (``None``: ``sys.argv``).
        options: the stage's own required options, ``name=help``.
    """
    args = parse_args(
        doc,
        argv,
        model="model name",
        data="raw MNIST directory",
        checkpoint="checkpoint file",
        **options,
    )
    params, device = torch_setup()
    model, _ = load_checkpoint(args.checkpoint, expected=args.model, device=device)
    images, labels = load_mnist(args.data, "test")  # MD5-verified before any compute
    return ModelStage(args, params, device, model, images, labels)


def run_model_stage(
    stage: str,
    compute: Callable[..., StageOutputs],
    doc: str | None,
    argv: list[str] | None,
    *,
    tables: tuple[str, ...] = (),
    link_model: bool = False,
    **outputs: str,
) -> None:
    """The whole of a per-model stage whose library call is ``compute``.

    ``compute(model, images, labels, name=, cfg=, seed=, device=)`` gets the params
    section named like the stage; its outputs go to the paths given as ``--<output>``.

    Args:
        stage: the stage (and params section) name, e.g. ``"evaluate"``.
        tables: output options that are extra CSV tables (``StageOutputs.tables``).
        link_model: log the test set as the run's dataset input and link the run's
            metrics to the logged model that produced the checkpoint (evaluation).
        outputs: the stage's output options, ``name=help`` (metrics, rows, figures, arrays
            and the tables).
    """
    s = model_stage(doc, argv, **outputs)
    p, a = s.params, s.args
    cfg = getattr(p, stage)
    with stage_run(f"{stage}@{a.model}", torch_sections(p, {stage: cfg})) as run:
        if link_model:
            run.log_dataset(a.data, context="evaluation")
            run.use_model(a.checkpoint)  # test metrics are linked to the model train logged
        out = compute(
            s.model, s.images, s.labels, name=a.model, cfg=cfg, seed=p.seed, device=s.device
        )
        paths = {k: getattr(a, k) for k in outputs if k not in tables}
        write_outputs(out, run, tables={t: getattr(a, t) for t in tables}, **paths)
