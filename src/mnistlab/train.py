"""Training and evaluation loops on in-memory uint8 MNIST tensors.

Batches are gathered straight from one uint8 tensor (no Dataset, no DataLoader,
no per-sample PIL), converted to float pixels in [0, 1] per batch. The training
order is reshuffled every epoch from a seeded generator.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mnistlab.config import TrainParams


def to_pixels(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``(B, 28, 28)`` -> float ``(B, 1, 28, 28)`` pixels in [0, 1]."""
    x = images.unsqueeze(1).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def random_shift(images: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each uint8 image ``(B, H, W)`` by its own random offset in
    ``[-max_shift, max_shift]`` pixels (zero fill), in one gather for the batch."""
    if max_shift == 0:
        return images
    b, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b, 1), generator=gen).to(images.device)
    rows = (torch.arange(h, device=images.device) + dy)[:, :, None]  # (B, H, 1)
    cols = (torch.arange(w, device=images.device) + dx)[:, None, :]  # (B, 1, W)
    return padded[torch.arange(b, device=images.device)[:, None, None], rows, cols]


def split_train_val(
    images: torch.Tensor, labels: torch.Tensor, val_size: int, seed: int, train_limit: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out a seeded random validation split; optionally cap the training part.

    Returns:
        ``train_x, train_y, val_x, val_y`` (uint8 images, int64 labels).
    """
    if val_size >= len(images):
        raise ValueError(f"train.val_size={val_size} leaves no training images of {len(images)}")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    if train_limit:
        train_idx = train_idx[:train_limit]
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, batch_size: int = 1000,
    device: torch.device | str = "cpu", channels_last: bool = False,
) -> torch.Tensor:
    """Logits ``(N, 10)`` for uint8 images, in eval mode, on CPU."""
    model.eval()
    out = [
        model(to_pixels(images[s].to(device), channels_last)).float().cpu()
        for s in batches(len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, 10)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).sum().item() / max(len(labels), 1)
    return loss, acc


@dataclasses.dataclass
class TrainResult:
    """What a training run returns; the stage writes it out and logs it."""

    train_steps: list[int]
    train_loss: list[float]
    val_steps: list[int]
    val_epoch: list[float]
    val_loss: list[float]
    val_accuracy: list[float]
    seconds_per_epoch: list[float]
    steps_per_epoch: int

    @property
    def train_seconds(self) -> float:
        return float(sum(self.seconds_per_epoch))

    def rows(self) -> list[dict]:
        """One row per logged step: training loss, and validation numbers where measured."""
        val = dict(zip(self.val_steps, zip(self.val_epoch, self.val_loss, self.val_accuracy,
                                           strict=True), strict=True))
        table = {s: {"step": s, "train_loss": loss} for s, loss in
                 zip(self.train_steps, self.train_loss, strict=True)}
        for s, (epoch, loss, acc) in val.items():
            table.setdefault(s, {"step": s})
            table[s].update(epoch=epoch, val_loss=loss, val_accuracy=acc)
        cols = ("step", "epoch", "train_loss", "val_loss", "val_accuracy")
        return [{c: table[s].get(c) for c in cols} for s in sorted(table)]


def make_optimizer(model: nn.Module, cfg: TrainParams) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainParams, total_steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def train_model(
    model: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    cfg: TrainParams,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place with minibatch SGD/AdamW and a per-step LR schedule.

    Training loss is recorded every ``cfg.log_every`` steps (as the mean over those
    steps); validation loss and accuracy every ``cfg.val_every`` steps and at the end
    of every epoch.
    """
    device = torch.device(device)
    cl = cfg.channels_last and device.type == "cpu"
    if cl:
        model.to(memory_format=torch.channels_last)
    model.to(device)
    train_x, train_y = train_x.to(device), train_y.to(device)
    opt = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train_x) / cfg.batch_size)
    sched = make_scheduler(opt, cfg, cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)

    res = TrainResult([], [], [], [], [], [], [], steps_per_epoch)

    def validate(step: int) -> None:
        logits = predict_logits(model, val_x, 1000, device, cl)
        loss, acc = loss_and_accuracy(logits, val_y)
        res.val_steps.append(step)
        res.val_epoch.append(round(step / steps_per_epoch, 4))
        res.val_loss.append(loss)
        res.val_accuracy.append(acc)
        model.train()

    step, running, count = 0, 0.0, 0
    for epoch in range(cfg.epochs):
        model.train()
        start = time.perf_counter()
        perm = torch.randperm(len(train_x), generator=gen).to(device)
        bar = tqdm(batches(len(perm), cfg.batch_size), total=steps_per_epoch, leave=False,
                   desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   mininterval=1.0)
        for sl in bar:
            idx = perm[sl]
            x = to_pixels(random_shift(train_x[idx], cfg.augment_shift, gen), cl)
            loss = F.cross_entropy(model(x), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running += loss.item()
            count += 1
            if step % cfg.log_every == 0:
                res.train_steps.append(step)
                res.train_loss.append(running / count)
                bar.set_postfix(loss=f"{running / count:.4f}")
                running, count = 0.0, 0
            if cfg.val_every and step % cfg.val_every == 0 and step % steps_per_epoch:
                validate(step)
        if count:  # flush the partial logging window at the epoch end
            res.train_steps.append(step)
            res.train_loss.append(running / count)
            running, count = 0.0, 0
        res.seconds_per_epoch.append(time.perf_counter() - start)
        validate(step)
    model.eval()
    if cl:
        model.to(memory_format=torch.contiguous_format)
    return res
