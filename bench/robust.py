"""Benchmark cases for adversarial training, the strong attack and attribution.

Each returns rows ``(case, measure, ours, baseline, ratio, notes)``, the ratio against
a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench.cases import (
    BATCH,
    _best_of,
    _ours,
    _params,
    _raw,
    _trained,
    adversarial_models,
    build_model,
    natural_models,
)
from mnistlab.core.mnist import load_mnist
from mnistlab.core.tensors import to_pixels


def _step(model, opt, x, y, *, adv, gen: torch.Generator) -> None:
    """One training step: craft the batch's adversarial images (``adv`` set), update."""
    from mnistlab.train.adversarial import perturb

    if adv is not None:
        x = perturb(
            model,
            x,
            y,
            eps=adv.eps,
            method=adv.method,
            steps=adv.steps,
            step_ratio=adv.step_ratio,
            generator=gen,
        )
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _adv_steps(model, batches, steps: int, *, adv, warmup: int = 3) -> float:
    """Images/s of adversarial training steps (crafting + update), after a warm-up."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    n, start = 0, 0.0
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            n, start = 0, time.perf_counter()
        _step(model, opt, x, y, adv=adv, gen=gen)
        n += len(y)
        if i + 1 == warmup + steps:
            break
    return n / (time.perf_counter() - start)


def adversarial_training(args: argparse.Namespace, steps: int = 30) -> list[list]:
    """PGD training's images/s against natural training of the same model, same loop."""
    images, labels = load_mnist(_raw(args), "train")
    name = adversarial_models()[0]
    adv = _params().train_for(name).adversarial
    torch.manual_seed(0)
    model = build_model(name).to(memory_format=torch.channels_last)
    natural = _adv_steps(model, _ours(images, labels, True), steps * 4, adv=None)
    robust = _adv_steps(model, _ours(images, labels, True), steps, adv=adv)
    return [
        [
            "train cnn_adv",
            f"training images/s (batch {BATCH}, {adv.method} {adv.steps} steps)",
            f"{robust:,.0f}",
            f"{natural:,.0f}",
            f"{robust / natural:.2f}x",
            f"baseline: natural training of the same model; {adv.steps + 1} forward/backward "
            "passes per batch bound the cost",
        ]
    ]


def profile_step(args: argparse.Namespace, steps: int = 20) -> list[list]:
    """Where a PGD-training step's time goes (torch.profiler), top operators by CPU time."""
    from torch.profiler import ProfilerActivity, profile

    images, labels = load_mnist(_raw(args), "train")
    name = adversarial_models()[0]
    adv = _params().train_for(name).adversarial
    model = build_model(name).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    batches = _ours(images, labels, True)
    for _ in range(3):
        next(batches)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            x, y = next(batches)
            _step(model, opt, x, y, adv=adv, gen=gen)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    return [
        [
            "profile cnn_adv step",
            f"share of self CPU time: {e.key}",
            f"{e.self_cpu_time_total / 1e3 / steps:.1f} ms/step",
            "",
            f"{e.self_cpu_time_total / total:.0%}",
            "torch.profiler, PGD training step",
        ]
        for e in top
    ]


def strong_attack(args: argparse.Namespace, n: int = 200) -> list[list]:
    """Images/s of the strong ensemble vs PGD-40 on the same images, per model."""
    from mnistlab.attacks.common.pgd import pgd
    from mnistlab.attacks.strong import worst_case

    raw = _raw(args)
    cfg = _params().attacks.strong
    images, labels = load_mnist(raw, "test")
    x, y = to_pixels(images[:n]), labels[:n]
    rows = []
    for name in [*natural_models()[:1], *adversarial_models()]:
        model, source = _trained(name, raw)
        gen = torch.Generator().manual_seed(0)
        t_strong = _best_of(
            lambda m=model, g=gen: worst_case(m, x, y, eps=0.3, cfg=cfg, gen=g), repeat=1
        )
        t_pgd = _best_of(
            lambda m=model, g=gen: pgd(
                m,
                x,
                y,
                eps=0.3,
                steps=cfg.pgd_steps,
                step_size=cfg.pgd_step_ratio * 0.3,
                random_start=True,
                early_stop=True,
                gen=g,
                batch_size=cfg.batch_size,
            ),
            repeat=1,
        )
        rows.append(
            [
                f"strong {name} eps 0.3",
                f"images/s ({n} images)",
                f"{n / t_strong:.1f}",
                f"{n / t_pgd:.1f}",
                f"{t_pgd / t_strong:.2f}x",
                f"PGD-{cfg.pgd_steps} + APGD-CE x{cfg.n_restarts} + APGD-DLR-T x{cfg.n_targets}, "
                f"{cfg.n_iter} iterations each, + Square {cfg.square_queries} queries, vs "
                f"PGD-{cfg.pgd_steps} alone; {source}",
            ]
        )
    return rows


def occlusion_vs_captum(args: argparse.Namespace) -> list[list]:
    """Our batched occlusion vs Captum's Occlusion on the same inputs (same answer to 1e-6)."""
    from mnistlab.attribution.methods import occlusion_captum, occlusion_to_pixels
    from mnistlab.visualize.occlusion import occlusion_maps

    raw = _raw(args)
    cfg = _params().attribution.occlusion
    images, labels = load_mnist(raw, "test")
    x, y = to_pixels(images[:10]), labels[:10]
    model, source = _trained("cnn", raw)
    window = {"patch": cfg.patch, "stride": cfg.stride, "fill": cfg.fill}

    def captum() -> torch.Tensor:
        return occlusion_captum(model, x, y, **window, perturbations_per_eval=64)

    ours = _best_of(lambda: occlusion_maps(model, x, y, **window))
    theirs = _best_of(captum)
    maps = occlusion_maps(model, x, y, **window)
    ours_pixels = occlusion_to_pixels(maps.logit_drop, patch=cfg.patch, stride=cfg.stride)
    diff = (ours_pixels.float() - captum()).abs().max()
    return [
        [
            "occlusion vs Captum",
            f"seconds for 10 images (patch {cfg.patch}, stride {cfg.stride})",
            f"{ours:.2f}",
            f"{theirs:.2f}",
            f"{theirs / ours:.2f}x",
            f"Captum Occlusion, 64 windows per pass; max |difference| {float(diff):.1e}; {source}",
        ]
    ]


def art_apgd(args: argparse.Namespace, n: int = 500, eps: float = 0.1) -> list[list]:
    """Our APGD-CE against the Adversarial Robustness Toolbox's on the pipeline's models.

    An accuracy check, not a speed race: the same algorithm in two independent codes
    should leave the same robust accuracy (within a point); ours is the ``ours`` column.
    """
    import numpy as np
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    from mnistlab.attacks.strong.apgd import apgd, strong_attack
    from mnistlab.core.tensors import predict

    raw = _raw(args)
    images, labels = load_mnist(raw, "test")
    x, y = to_pixels(images[:n]), labels[:n]
    n_iter = _params().attacks.strong.n_iter
    rows = []
    for name in natural_models():
        model, source = _trained(name, raw)
        gen = torch.Generator().manual_seed(0)
        ours = apgd(model, x, y, eps=eps, n_iter=n_iter, generator=gen)
        ours_acc = float((predict(model, ours) == y).float().mean())
        ensemble = strong_attack(model, x, y, eps=eps, n_iter=n_iter, generator=gen)
        clf = PyTorchClassifier(
            model=model,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=(1, 28, 28),
            nb_classes=10,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )
        attack = AutoProjectedGradientDescent(
            clf,
            norm=np.inf,
            eps=eps,
            eps_step=2 * eps,
            max_iter=n_iter,
            nb_random_init=1,
            batch_size=250,
            loss_type="cross_entropy",
            verbose=False,
        )
        theirs = attack.generate(x.numpy(), y=y.numpy())
        theirs_acc = float((clf.predict(theirs).argmax(1) == y.numpy()).mean())
        rows.append(
            [
                f"APGD-CE vs ART {name} eps {eps:g}",
                f"robust accuracy ({n} images, {n_iter} iterations)",
                f"{ours_acc:.1%}",
                f"{theirs_acc:.1%}",
                f"{100 * (ours_acc - theirs_acc):+.1f} pt",
                f"ART AutoProjectedGradientDescent (cross-entropy); our full ensemble "
                f"{ensemble.robust_accuracy:.1%}; {source}",
            ]
        )
    return rows


CASES = {
    "adversarial_training": adversarial_training,
    "profile_step": profile_step,
    "strong_attack": strong_attack,
    "occlusion_vs_captum": occlusion_vs_captum,
    "art_apgd": art_apgd,
}
