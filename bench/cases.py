"""Benchmark cases. Each returns rows: (case, measure, ours, baseline, ratio, notes)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from mnistlab.core.config import Params, load_params
from mnistlab.core.mnist import load_mnist
from mnistlab.core.models import model_from_params
from mnistlab.core.tensors import to_pixels
from mnistlab.download import default_cache_dir

BATCH = 128
REPO = Path(__file__).resolve().parents[1]


def natural_models() -> list[str]:
    """The models of params.yaml trained without an adversary, in its order."""
    p = _params()
    return [m for m in p.models if p.train_for(m).adversarial is None]


def adversarial_models() -> list[str]:
    """The models of params.yaml trained against an adversary, in its order."""
    p = _params()
    return [m for m in p.models if p.train_for(m).adversarial is not None]


def build_model(name: str):
    """A fresh model ``name`` of params.yaml."""
    return model_from_params(_params(), name)


def _params() -> Params:
    """The repo's params.yaml: the one place a default lives."""
    return load_params(REPO / "params.yaml")


def _raw(args: argparse.Namespace) -> Path:
    for cand in (args.data, "data/MNIST/raw", default_cache_dir() / "MNIST" / "raw"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    raise SystemExit("bench needs MNIST: run `dvc repro download` first")


def _train_steps(model, batches, steps: int, warmup: int = 10, channels_last: bool = False):
    """Images/s of SGD steps drawn from the iterator ``batches`` (after a warm-up)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    n, start = 0, 0.0
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            n, start = 0, time.perf_counter()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(y)
        if i + 1 == warmup + steps:
            break
    return n / (time.perf_counter() - start)


def _ours(images, labels, channels_last: bool):
    gen = torch.Generator().manual_seed(0)
    while True:
        perm = torch.randperm(len(images), generator=gen)
        for s in range(0, len(perm) - BATCH + 1, BATCH):
            idx = perm[s : s + BATCH]
            yield to_pixels(images[idx], channels_last=channels_last), labels[idx]


def _reference(root: Path):
    """The textbook loop: torchvision MNIST + ToTensor/Normalize + DataLoader (shuffled)."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    ds = datasets.MNIST(str(root), train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    while True:
        yield from loader


def train(args: argparse.Namespace, steps: int = 120) -> list[list]:
    raw = _raw(args)
    images, labels = load_mnist(raw, "train")
    rows, ours_ips = [], {}
    for name in natural_models():
        torch.manual_seed(0)
        ref = _train_steps(build_model(name), _reference(raw.parent.parent), steps)
        torch.manual_seed(0)
        plain = _train_steps(build_model(name), _ours(images, labels, False), steps)
        torch.manual_seed(0)
        model = build_model(name).to(memory_format=torch.channels_last)
        ours = _train_steps(model, _ours(images, labels, True), steps)
        ours_ips[name] = ours
        rows.append(
            [
                f"train {name}",
                "training images/s (batch 128)",
                f"{ours:,.0f}",
                f"{ref:,.0f}",
                f"{ours / ref:.2f}x",
                "ours: in-memory uint8 + channels_last; baseline: torchvision MNIST + "
                "ToTensor/Normalize + DataLoader",
            ]
        )
        rows.append(
            [
                f"train {name}",
                "channels_last vs NCHW, same in-memory loop",
                f"{ours:,.0f}",
                f"{plain:,.0f}",
                f"{ours / plain:.2f}x",
                "",
            ]
        )
    rows.append(
        [
            "train cnn_bn / cnn",
            "BatchNorm training-time ratio",
            f"{ours_ips['cnn'] / ours_ips['cnn_bn']:.2f}x the time",
            "",
            "",
            "the reference report claimed ~2x",
        ]
    )
    return rows


def _trained(name: str, raw: Path):
    """The pipeline's checkpoint when present, else a quickly trained stand-in."""
    from mnistlab.core.models import load_checkpoint
    from mnistlab.train import split_train_val, train_model

    ckpt = Path("models") / f"{name}.pt"
    if ckpt.is_file():
        return load_checkpoint(ckpt, expected=name)[0], "the pipeline's checkpoint"
    images, labels = load_mnist(raw, "train")
    tx, ty, vx, vy = split_train_val(images, labels, val_size=1000, seed=0, train_limit=10_000)
    model = build_model(name)
    cfg = _params().train.model_copy(update={"epochs": 1})
    train_model(model, tx, ty, vx, vy, cfg=cfg, seed=0, progress=False)
    return model.eval(), "1 epoch on 10k images"


def _best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def occlusion(args: argparse.Namespace) -> list[list]:
    from mnistlab.visualize.occlusion import occlusion_maps, occlusion_maps_naive

    raw = _raw(args)
    cfg = _params().visualize.occlusion
    images, labels = load_mnist(raw, "test")
    x, y = to_pixels(images[: cfg.n_images]), labels[: cfg.n_images]
    model, source = _trained("cnn", raw)
    fast = _best_of(
        lambda: occlusion_maps(
            model,
            x,
            y,
            patch=cfg.patch,
            stride=cfg.stride,
            fill=cfg.fill,
            batch_size=cfg.batch_size,
        )
    )
    naive = _best_of(
        lambda: occlusion_maps_naive(
            model, x, y, patch=cfg.patch, stride=cfg.stride, fill=cfg.fill
        ),
        repeat=1,
    )
    n = len(y)
    return [
        [
            "occlusion cnn",
            f"maps/s ({n} images, patch {cfg.patch}, stride {cfg.stride})",
            f"{n / fast:.2f}",
            f"{n / naive:.2f}",
            f"{naive / fast:.1f}x",
            f"batched forward passes vs one call per position; {source}",
        ]
    ]


def pgd(args: argparse.Namespace, n: int = 500) -> list[list]:
    from mnistlab.attacks.common.pgd import pgd as pgd_early_stop
    from mnistlab.attacks.common.pgd import pgd_textbook

    raw = _raw(args)
    cfg = _params().attacks.pgd
    images, labels = load_mnist(raw, "test")
    x, y = to_pixels(images[:n]), labels[:n]
    model, source = _trained("cnn", raw)
    rows = []
    for eps in (0.1, 0.3):
        kw = dict(
            eps=eps,
            steps=cfg.steps,
            step_size=cfg.step_ratio * eps,
            random_start=True,
            batch_size=cfg.batch_size,
        )
        fast = _best_of(
            lambda kw=kw: pgd_early_stop(
                model, x, y, early_stop=True, gen=torch.Generator().manual_seed(0), **kw
            )
        )
        slow = _best_of(
            lambda kw=kw: pgd_textbook(model, x, y, gen=torch.Generator().manual_seed(0), **kw),
            repeat=1,
        )
        rows.append(
            [
                f"pgd cnn eps {eps}",
                f"images/s ({n} images, {cfg.steps} steps)",
                f"{n / fast:,.0f}",
                f"{n / slow:,.0f}",
                f"{slow / fast:.1f}x",
                f"early exit per image vs the textbook loop; {source}",
            ]
        )
    return rows


def _flops_per_image(model: torch.nn.Module) -> float:
    """Forward multiply-adds x 2, x 3 for forward + backward (the usual estimate)."""
    from mnistlab.architecture import describe

    macs = 0
    for layer in describe(model)["layers"]:
        out = 1
        for d in layer["output_shape"]:
            out *= d
        if layer["type"] == "Conv2d":
            macs += layer["weights"] // layer["output_shape"][0] * out
        elif layer["type"] == "Linear":
            macs += layer["weights"]
    return 3 * 2 * macs


def _matmul_peak(n: int = 1024, repeat: int = 20) -> float:
    """Measured fp32 matmul FLOP/s of this CPU with torch's threads (best of a few)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    secs = _best_of(lambda: [a @ b for _ in range(repeat)], repeat=3) / repeat
    return 2 * n**3 / secs


def efficiency(args: argparse.Namespace) -> list[list]:
    raw = _raw(args)
    images, labels = load_mnist(raw, "train")
    peak = _matmul_peak()
    rows = []
    for name in natural_models():
        torch.manual_seed(0)
        model = build_model(name).to(memory_format=torch.channels_last)
        ips = _train_steps(model, _ours(images, labels, True), 120)
        flops = _flops_per_image(build_model(name))
        rows.append(
            [
                f"train {name}",
                "fraction of the CPU's fp32 matmul peak",
                f"{flops * ips / 1e9:.1f} GFLOP/s",
                f"{peak / 1e9:.1f} GFLOP/s",
                f"{flops * ips / peak:.0%}",
                f"{flops / 1e6:.1f} MFLOP per training image (fwd+bwd), {ips:,.0f} img/s",
            ]
        )
    return rows


def _timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> float:
    import os
    import subprocess

    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def startup(args: argparse.Namespace) -> list[list]:
    """Fixed cost of a stage: interpreter + imports, and the MLflow run set-up."""
    import sys
    import tempfile

    py = sys.executable
    bare = min(_timed([py, "-c", "pass"]) for _ in range(3))
    rows = []
    for mod in ("stages.validate_params", "stages.download", "stages.train", "stages.attack"):
        t = min(_timed([py, "-c", f"import {mod}"]) for _ in range(3))
        rows.append(
            [
                f"start-up {mod}",
                "seconds to import the stage module",
                f"{t:.2f}",
                f"{bare:.2f}",
                f"{t / bare:.0f}x",
                "baseline: a bare python",
            ]
        )
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "from mnistlab.harness.tracking import stage_run\n"
            "with stage_run('bench', {'x': 1}): pass"
        )
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/m.db"}
        first = _timed([py, "-c", code], env=env)
        again = min(_timed([py, "-c", code], env=env) for _ in range(2))
    rows.append(
        [
            "start-up MLflow run",
            "seconds to open and close a stage's run",
            f"{again:.2f}",
            f"{first:.2f}",
            f"{again / first:.2f}",
            "ours: an existing mlflow.db; baseline: creating the database",
        ]
    )
    return rows


def pipeline(args: argparse.Namespace) -> list[list]:
    """Per-stage wall time of the last `dvc repro`, from its MLflow runs; no-op repro time."""
    import mlflow

    from mnistlab.harness.tracking_store import EXPERIMENT, tracking_uri

    client = mlflow.MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [exp.experiment_id],
        "attributes.status = 'FINISHED'",
        max_results=5000,
        order_by=["attributes.start_time DESC"],
    )
    latest: dict[str, object] = {}
    for r in runs:  # the stage runs of plain `dvc repro`s (not experiments, not parents)
        if "dvc_exp_name" not in r.data.tags and r.data.tags.get("run_kind") != "pipeline":
            latest.setdefault(r.info.run_name, r)
    rows = []
    total = 0.0
    for name, r in sorted(latest.items(), key=lambda kv: kv[1].info.start_time):
        secs = (r.info.end_time - r.info.start_time) / 1000
        total += secs
        rows.append(
            [f"repro {name}", "seconds inside the stage's MLflow run", f"{secs:.1f}", "", "", ""]
        )
    ordered = sorted(latest.values(), key=lambda r: r.info.start_time)
    wall = (ordered[-1].info.end_time - ordered[0].info.start_time) / 1000
    overhead = (wall - total) / max(len(ordered) - 1, 1)
    rows.append(
        [
            "repro all stages",
            "seconds: stage compute (sum) / wall, first run start to last run end",
            f"{total:.0f}",
            f"{wall:.0f}",
            f"{total / wall:.0%}",
            f"the rest, ~{overhead:.1f} s between stages, is process start-up, imports, "
            "MLflow set-up and DVC's own bookkeeping",
        ]
    )
    startups = sorted(
        float(r.data.tags["startup_seconds"]) for r in ordered if "startup_seconds" in r.data.tags
    )
    if startups:
        rows.append(
            [
                "repro stage start-up",
                "seconds from process start to its MLflow run open (median; max)",
                f"{startups[len(startups) // 2]:.2f}",
                "",
                f"{startups[-1]:.2f}",
                "imports (torch, mlflow), params, data and checkpoint checks, store set-up",
            ]
        )
    noop = min(_timed(["dvc", "repro"]) for _ in range(2))
    rows.append(["no-op dvc repro", "seconds when nothing changed", f"{noop:.1f}", "", "", ""])
    return rows


CASES: dict[str, Callable[[argparse.Namespace], list[list]]] = {
    "train": train,
    "efficiency": efficiency,
    "occlusion": occlusion,
    "pgd": pgd,
    "startup": startup,
    "pipeline": pipeline,
}
