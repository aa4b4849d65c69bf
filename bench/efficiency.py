"""Per-stage efficiency: each heavy stage's useful FLOPs per second as a fraction of the
CPU's fp32 matmul peak, measured in the same run.

Every heavy stage runs its own library code (the function its stage calls, with the
params of params.yaml) on a slice of its work: fewer images or steps, the same loops,
batch sizes, early exits and step rules. The slice runs twice with the same seeds: once
timed, alone; once under a dispatch mode that counts, with the formulas of
``torch.utils.flop_counter``, the FLOPs of every convolution and matmul the passes
actually ran (forward, and backward for what needed a gradient: images' attacks skip
the weight gradients). Both runs do the same work (seeded, deterministic), so counted
FLOPs / timed seconds is the rate the stage reached. Elementwise work (ReLU, pooling,
projections, the optimiser) counts for nothing: it is the overhead the fraction measures.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.cases import _matmul_peak, _params, _raw
from mnistlab.core.mnist import load_mnist
from mnistlab.core.models import load_checkpoint

log = logging.getLogger("bench")

MODELS = tuple(_params().models)  # params.yaml's, in its order


class _FlopCount:
    """Counts the FLOPs of every op in torch's ``flop_registry`` (convolutions and
    matmuls, forward and backward) that runs inside it. ``FlopCounterMode`` counts the
    same ops, but its module tracker's backward hooks break ``autograd.grad`` on a leaf
    tensor (every attack's gradient step), so the mode is ours."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    counter.flops += formula(*args, **kwargs, out_val=out)
                return out

        self.flops = 0
        self.mode = Mode()


def _count(work: Callable[[], object]) -> tuple[float, float]:
    """``(seconds, flops)`` of ``work()``: timed alone, then counted in a second run."""
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    counter = _FlopCount()
    with counter.mode:
        work()
    return seconds, float(counter.flops)


def _model(name: str):
    ckpt = Path("models") / f"{name}.pt"
    if not ckpt.is_file():
        raise SystemExit(f"bench --only stages needs the pipeline's {ckpt}: run `make repro`")
    return load_checkpoint(ckpt, expected=name)[0]


def _train_work(name: str, images, labels, n_train: int) -> Callable[[], object]:
    """One epoch of ``train@<name>`` on ``n_train`` images, with its end-of-epoch
    validation (and, for an adversarially trained model, its PGD check scaled to the slice)."""
    from mnistlab.core.models import model_from_params
    from mnistlab.train import split_train_val, train_model

    params = _params()
    cfg = params.train_for(name)
    update: dict = {"epochs": 1, "train_limit": n_train}
    if cfg.adversarial is not None:
        full = len(images) - cfg.val_size
        check = max(1, round(cfg.adversarial.check_images * n_train / full))
        # the ramp would make the slice's eps smaller than most of the stage's steps
        adv = cfg.adversarial.model_copy(update={"ramp_epochs": 0, "check_images": check})
        update["adversarial"] = adv
    cfg = cfg.model_copy(update=update)
    split = split_train_val(images, labels, cfg.val_size, params.seed, cfg.train_limit)

    def work() -> None:
        torch.manual_seed(params.seed)
        model = model_from_params(params, name)
        train_model(model, *split, cfg=cfg, seed=params.seed, progress=False)

    return work


def _attack_work(form: str, name: str, test, update: dict) -> Callable[[], object]:
    """``attack@<form>-<name>``'s ``compute`` with ``attacks.<form>`` updated."""
    import importlib

    from mnistlab.attacks.common.inputs import AttackInputs
    from mnistlab.core.tensors import set_seeds

    params = _params()
    section = getattr(params.attacks, form)
    nested = {k: v for k, v in update.items() if isinstance(v, dict)}
    flat = {k: v for k, v in update.items() if not isinstance(v, dict)}
    for key, sub in nested.items():
        flat[key] = getattr(section, key).model_copy(update=sub)
    attacks = params.attacks.model_copy(update={form: section.model_copy(update=flat)})
    params = params.model_copy(update={"attacks": attacks})
    compute = importlib.import_module(f"mnistlab.attacks.{form}").compute
    model = _model(name)

    def work() -> None:
        gen = set_seeds(params.seed)
        compute(AttackInputs(model=model, test=test, params=params, gen=gen, device="cpu"))

    return work


def _transfer_work(test, n_images: int) -> Callable[[], object]:
    """The ``transfer`` stage's ``compute`` (PGD crafted on each model, scored on every
    model, figures) on ``n_images``, reading the attack stages' arrays."""
    from mnistlab.core.tensors import set_seeds
    from mnistlab.transfer import compute

    params = _params()
    params = params.model_copy(
        update={"transfer": params.transfer.model_copy(update={"n_images": n_images})}
    )
    from stages.transfer import load_sets

    models = {m: _model(m) for m in MODELS}
    arrays = load_sets(Path("artifacts/transfer"), list(params.attacks), list(MODELS))

    def work() -> None:
        gen = set_seeds(params.seed)
        compute(models, arrays, test, params=params, gen=gen, device="cpu")

    return work


def _attribution_work(name: str, test, train_images, n_images: int) -> Callable[[], object]:
    from mnistlab.attribution import compute
    from mnistlab.attribution.baselines import mean_image

    params = _params()
    cfg = params.attribution.model_copy(update={"n_images": n_images})
    model = _model(name)
    mean = mean_image(train_images)

    def work() -> None:
        compute(model, *test, name=name, cfg=cfg, seed=params.seed, mean_image=mean)

    return work


def stages(args: argparse.Namespace) -> list[list]:
    raw = _raw(args)
    train = load_mnist(raw, "train")
    test = load_mnist(raw, "test")
    peak = _matmul_peak()
    params = _params()
    slices: list[tuple[str, str, Callable[[], object]]] = []
    for m in MODELS:
        if params.train_for(m).adversarial is None:
            what, n = "1 epoch on 12,800 images + validation", 12_800
        else:
            what, n = "1 epoch on 2,560 images at full eps + validation + PGD check", 2_560
        slices.append((f"train@{m}", what, _train_work(m, *train, n)))
    for m in MODELS:
        slices.append(
            (
                f"attack@pgd-{m}",
                "200 images, every eps",
                _attack_work("pgd", m, test, {"n_images": 200}),
            )
        )
    for m in MODELS:
        update = {"n_images": 100, "min_eps": {"n_images": 20}}
        slices.append(
            (
                f"attack@strong-{m}",
                "100 images at each eps + min-eps on 20, Square included",
                _attack_work("strong", m, test, update),
            )
        )
    slices.append(("transfer", "PGD on 200 images per model", _transfer_work(test, 200)))
    n_attr = _params().attribution.n_images  # the whole stage: figures are part of its cost
    for m in MODELS:
        work = _attribution_work(m, test, train[0], n_attr)
        slices.append((f"attribution@{m}", f"the whole stage ({n_attr} images)", work))
    rows = []
    for stage, what, work in slices:
        log.info("  %s: %s", stage, what)
        work()  # warm-up: first-call allocations and oneDNN primitive creation
        seconds, flops = _count(work)
        rate = flops / seconds
        rows.append(
            [
                f"stage {stage}",
                "useful GFLOP/s vs the fp32 matmul peak",
                f"{rate / 1e9:.1f}",
                f"{peak / 1e9:.1f}",
                f"{rate / peak:.0%}",
                f"{what}; {flops / 1e9:.1f} GFLOP counted in {seconds:.1f} s",
            ]
        )
        log.info("  %s", rows[-1])
    return rows


def square_budget(args: argparse.Namespace, n_images: int = 500, eps: float = 0.3) -> list[list]:
    """Square's query budget, chosen by measurement: robust accuracy of ``cnn_adv`` at
    eps 0.3 after the gradient members alone, then with Square at 1k, 2k and 5k queries
    on what they left (a run per budget: the square-size schedule scales with it)."""
    from mnistlab.attacks.common.robustness import seeded_test_subset
    from mnistlab.attacks.strong import worst_case
    from mnistlab.attacks.strong.square import square
    from mnistlab.core.tensors import predict, set_seeds

    params = _params()
    cfg = params.attacks.strong
    test = load_mnist(_raw(args), "test")
    model = _model("cnn_adv")
    _, x, y = seeded_test_subset(test, n=n_images, seed=params.seed, device="cpu")
    gen = set_seeds(params.seed)
    start = time.perf_counter()
    ok = worst_case(model, x, y, eps=eps, cfg=cfg.model_copy(update={"square_queries": 0}), gen=gen)
    gradient_seconds = time.perf_counter() - start
    left = ok["apgd"].nonzero().squeeze(1)
    rows = [
        [
            f"square budget cnn_adv eps {eps:g}",
            "robust accuracy, gradient members alone",
            f"{float(ok['apgd'].float().mean()):.1%}",
            "",
            "",
            f"PGD-{cfg.pgd_steps} + APGD-CE + APGD-DLR-T x{cfg.n_targets} on {n_images} "
            f"images; {gradient_seconds:.0f} s",
        ]
    ]
    for budget in (1000, 2000, 5000):
        start = time.perf_counter()
        adv, queries = square(
            model, x[left], y[left], eps=eps, n_queries=budget, generator=set_seeds(params.seed)
        )
        seconds = time.perf_counter() - start
        broken = predict(model, adv) != y[left]
        robust = (len(left) - int(broken.sum())) / n_images
        rows.append(
            [
                f"square budget cnn_adv eps {eps:g}",
                f"robust accuracy, + Square {budget:,} queries",
                f"{robust:.1%}",
                "",
                "",
                f"broke {int(broken.sum())} of the {len(left)} left; {seconds:.0f} s "
                f"({int(queries.sum()):,} forward passes)",
            ]
        )
        log.info("  %s", rows[-1])
    return rows


CASES = {"stages": stages, "square_budget": square_budget}
