"""Benchmark cases. Each returns rows: (case, measure, ours, baseline, ratio, notes)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from mnistlab import data
from mnistlab.models import build_model
from mnistlab.train import to_pixels

BATCH = 128


def _raw(args: argparse.Namespace) -> Path:
    for cand in (args.data, "data/MNIST/raw", data.default_cache_dir() / "MNIST" / "raw"):
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
            yield to_pixels(images[idx], channels_last), labels[idx]


def _reference(root: Path):
    """The textbook loop: torchvision MNIST + ToTensor/Normalize + DataLoader (shuffled)."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    ds = datasets.MNIST(str(root), train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    while True:
        yield from loader


def train(args: argparse.Namespace, steps: int = 120) -> list[list]:
    raw = _raw(args)
    images, labels = data.load_mnist(raw, "train")
    rows, ours_ips = [], {}
    for name in ("cnn", "cnn_bn"):
        torch.manual_seed(0)
        ref = _train_steps(build_model(name), _reference(raw.parent.parent), steps)
        torch.manual_seed(0)
        plain = _train_steps(build_model(name), _ours(images, labels, False), steps)
        torch.manual_seed(0)
        model = build_model(name).to(memory_format=torch.channels_last)
        ours = _train_steps(model, _ours(images, labels, True), steps)
        ours_ips[name] = ours
        rows.append([f"train {name}", "training images/s (batch 128)", f"{ours:,.0f}",
                     f"{ref:,.0f}", f"{ours / ref:.2f}x",
                     "ours: in-memory uint8 + channels_last; baseline: torchvision MNIST + "
                     "ToTensor/Normalize + DataLoader"])
        rows.append([f"train {name}", "channels_last vs NCHW, same in-memory loop",
                     f"{ours:,.0f}", f"{plain:,.0f}", f"{ours / plain:.2f}x", ""])
    rows.append(["train cnn_bn / cnn", "BatchNorm training-time ratio",
                 f"{ours_ips['cnn'] / ours_ips['cnn_bn']:.2f}x the time", "", "",
                 "the reference report claimed ~2x"])
    return rows


def _trained(name: str, raw: Path):
    """The pipeline's checkpoint when present, else a quickly trained stand-in."""
    from mnistlab.config import parse_params
    from mnistlab.models import load_checkpoint
    from mnistlab.train import split_train_val, train_model

    ckpt = Path("models") / f"{name}.pt"
    if ckpt.is_file():
        return load_checkpoint(ckpt)[0], "the pipeline's checkpoint"
    images, labels = data.load_mnist(raw, "train")
    tx, ty, vx, vy = split_train_val(images, labels, 1000, 0, 10_000)
    model = build_model(name)
    train_model(model, tx, ty, vx, vy, parse_params({"train": {"epochs": 1}}).train, 0,
                progress=False)
    return model.eval(), "1 epoch on 10k images"


def _best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def occlusion(args: argparse.Namespace) -> list[list]:
    from mnistlab import inspect
    from mnistlab.config import parse_params

    raw = _raw(args)
    cfg = parse_params({}).visualize.occlusion
    images, labels = data.load_mnist(raw, "test")
    x, y = to_pixels(images[: cfg.n_images]), labels[: cfg.n_images]
    model, source = _trained("cnn", raw)
    fast = _best_of(lambda: inspect.occlusion_maps(model, x, y, cfg.patch, cfg.stride, cfg.fill,
                                                   cfg.batch_size))
    naive = _best_of(lambda: inspect.occlusion_maps_naive(model, x, y, cfg.patch, cfg.stride,
                                                          cfg.fill), repeat=1)
    n = len(y)
    return [["occlusion cnn", f"maps/s ({n} images, patch {cfg.patch}, stride {cfg.stride})",
             f"{n / fast:.2f}", f"{n / naive:.2f}", f"{naive / fast:.1f}x",
             f"batched forward passes vs one call per position; {source}"]]


CASES: dict[str, Callable[[argparse.Namespace], list[list]]] = {
    "train": train,
    "occlusion": occlusion,
}
