"""Training and evaluation loops on in-memory uint8 MNIST tensors.

Batches are gathered straight from one uint8 tensor (no Dataset, no DataLoader,
no per-sample PIL), converted to float pixels in [0, 1] per batch. The training
order is reshuffled every epoch from a seeded generator.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mnistlab.core.errors import TrainingError
from mnistlab.core.outputs import StageOutputs
from mnistlab.core.params_train import TrainParams
from mnistlab.core.tensors import batches, loss_and_accuracy, predict_logits, to_pixels
from mnistlab.train import adversarial

log = logging.getLogger(__name__)


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
    # Adversarial training only: APGD-CE accuracy on held-out images after each epoch.
    val_robust_steps: list[int] = dataclasses.field(default_factory=list)
    val_robust_accuracy: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int = 0  # the epoch whose weights were kept (0: the last one)

    @property
    def train_seconds(self) -> float:
        return float(sum(self.seconds_per_epoch))

    def rows(self) -> list[dict]:
        """One row per logged step: training loss, and validation numbers where measured."""
        val = dict(
            zip(
                self.val_steps,
                zip(self.val_epoch, self.val_loss, self.val_accuracy, strict=True),
                strict=True,
            )
        )
        table = {
            s: {"step": s, "train_loss": loss}
            for s, loss in zip(self.train_steps, self.train_loss, strict=True)
        }
        for s, (epoch, loss, acc) in val.items():
            table.setdefault(s, {"step": s})
            table[s].update(epoch=epoch, val_loss=loss, val_accuracy=acc)
        for s, acc in zip(self.val_robust_steps, self.val_robust_accuracy, strict=True):
            table[s]["val_robust_accuracy"] = acc
        cols = (
            "step",
            "epoch",
            "train_loss",
            "val_loss",
            "val_accuracy",
            *(("val_robust_accuracy",) if self.val_robust_steps else ()),
        )
        return [{c: table[s].get(c) for c in cols} for s in sorted(table)]


def make_optimizer(model: nn.Module, cfg: TrainParams) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0,
    )


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
    *,
    cfg: TrainParams,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place with minibatch SGD/AdamW and a per-step LR schedule.

    Training loss is recorded every ``cfg.log_every`` steps (as the mean over those
    steps); validation loss and accuracy every ``cfg.val_every`` steps and at the end
    of every epoch. With ``cfg.adversarial`` every batch is replaced by adversarial
    examples crafted against the current model (eps ramped up over the first epochs);
    after each epoch APGD-CE accuracy (the strong evaluation's first member, not the
    attack trained against) on a held-out subset is measured, and the weights of the
    best epoch by it are kept: a guard against catastrophic overfitting, where
    FGSM-trained models suddenly lose all PGD robustness.

    Raises:
        TrainingError: the loss became NaN or infinite.
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
    adv = cfg.adversarial
    # A generator of its own, so natural training draws exactly what it always drew.
    adv_gen = torch.Generator(device=device).manual_seed(seed + 1)
    best_state, best_robust = None, -1.0

    def validate(step: int) -> None:
        logits = predict_logits(model, val_x, device=device, channels_last=cl)
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
        bar = tqdm(
            batches(len(perm), cfg.batch_size),
            total=steps_per_epoch,
            leave=False,
            desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            mininterval=1.0,
        )
        for sl in bar:
            idx = perm[sl]
            x = to_pixels(random_shift(train_x[idx], cfg.augment_shift, gen), channels_last=cl)
            if adv is not None:
                eps = adversarial.eps_at(
                    step, steps_per_epoch=steps_per_epoch, eps=adv.eps, ramp_epochs=adv.ramp_epochs
                )
                x_adv = adversarial.perturb(
                    model,
                    x,
                    train_y[idx],
                    eps=eps,
                    method=adv.method,
                    steps=adv.steps,
                    step_ratio=adv.step_ratio,
                    generator=adv_gen,
                )
                if adv.method == "trades":
                    loss = adversarial.trades_loss(model, x, x_adv, train_y[idx], beta=adv.beta)
                else:
                    loss = F.cross_entropy(model(x_adv), train_y[idx])
            else:
                loss = F.cross_entropy(model(x), train_y[idx])
            if not math.isfinite(loss.item()):
                raise TrainingError(
                    f"{desc}: the training loss became {loss.item()} at step "
                    f"{step + 1} (learning rate too high?)"
                )
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
        if adv is not None:
            n = min(adv.check_images, len(val_x))
            robust = adversarial.apgd_ce_accuracy(
                model,
                to_pixels(val_x[:n].to(device)),
                val_y[:n].to(device),
                eps=adv.eps,
                n_iter=adv.check_steps,
                generator=adv_gen,
            )
            res.val_robust_steps.append(step)
            res.val_robust_accuracy.append(robust)
            if robust > best_robust:
                best_robust, res.best_epoch = robust, epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.train()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if cl:
        model.to(memory_format=torch.contiguous_format)
    return res


def compute(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    name: str,
    build: Callable[[], nn.Module],
    cfg: TrainParams,
    seed: int,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, StageOutputs]:
    """The ``train@<name>`` stage: split, build, train; the model and what to write.

    Args:
        images: uint8 ``(N, 28, 28)`` training images; ``labels``: ``(N,)``.
        build: makes the untrained model (after the split, so the seeded initial
            weights do not depend on how the split draws).
    """
    from mnistlab.train import figures

    train_x, train_y, val_x, val_y = split_train_val(
        images, labels, cfg.val_size, seed, cfg.train_limit
    )
    model = build()
    log.info(
        "training %s on %d images (%d held out), %d epochs, on %s",
        name,
        len(train_x),
        len(val_x),
        cfg.epochs,
        device,
    )
    res = train_model(
        model, train_x, train_y, val_x, val_y, cfg=cfg, seed=seed, device=device, desc=name
    )
    model.cpu()
    metrics = {
        "val_accuracy": res.val_accuracy[-1],
        "val_loss": res.val_loss[-1],
        "train_seconds": round(res.train_seconds, 3),
        "seconds_per_epoch": [round(s, 3) for s in res.seconds_per_epoch],
        "images_per_second": round(len(train_x) * cfg.epochs / res.train_seconds, 1),
        "n_train": len(train_x),
        "n_val": len(val_x),
        "steps": res.val_steps[-1],
    }
    if res.val_robust_accuracy:
        metrics["val_robust_accuracy"] = max(res.val_robust_accuracy)
        metrics["best_epoch"] = res.best_epoch
    log.info(
        "%s: validation accuracy %.4f after %.1fs", name, metrics["val_accuracy"], res.train_seconds
    )
    out = StageOutputs(
        metrics=metrics,
        rows=res.rows(),
        figures={
            "loss_curves": figures.loss_curves(res, name),
            "val_accuracy": figures.val_accuracy(res, name),
        },
        series={
            "train_loss": (res.train_steps, res.train_loss),
            "val_loss": (res.val_steps, res.val_loss),
            "val_accuracy": (res.val_steps, res.val_accuracy),
            "val_robust_accuracy": (res.val_robust_steps, res.val_robust_accuracy),
        },
    )
    return model, out
