"""Adversarial attacks on the study's CNNs (part 3): class models, targeted examples,
learned noise, FGSM and PGD, and robustness curves.

Every attack takes raw pixels in [0, 1] shaped ``(B, 1, 28, 28)`` and keeps its
outputs in [0, 1]. All the images of one problem (every class, every image/target
pair) go through the model together, one forward/backward per iteration; only
FGSM/PGD chunk over ``batch_size``. The model is used in eval mode with its
parameters frozen for the duration of a call (gradients are taken with respect to
the input only) and its state is restored afterwards. Randomness comes only from a
``torch.Generator`` argument; tensors stay on the device of the inputs (the model's
device where there is no input).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnistlab.config import NUM_CLASSES
from mnistlab.train import batches, to_pixels

Attack = Callable[[Tensor, Tensor, float], Tensor]  # (x, y, eps) -> x_adv


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter; both restored on exit."""
    training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(training)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    return next(model.parameters(), torch.empty(0)).device


def _generator(gen: torch.Generator | int) -> torch.Generator:
    return torch.Generator().manual_seed(gen) if isinstance(gen, int) else gen


def _rand(shape: torch.Size | tuple[int, ...], gen: torch.Generator, device: torch.device,
          normal: bool = False) -> Tensor:
    """Uniform [0, 1) (or standard normal) noise drawn on ``gen``'s device, moved to ``device``."""
    draw = torch.randn if normal else torch.rand
    return draw(shape, generator=gen, device=gen.device).to(device)


def _sq_norm(t: Tensor) -> Tensor:
    """Squared L2 norm per sample: ``(B, ...)`` -> ``(B,)``."""
    return t.flatten(1).pow(2).sum(1)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Predicted classes ``(N,)`` for pixels ``x`` ``(N, 1, 28, 28)``, in eval mode."""
    with frozen(model):
        out = [model(x[s]).argmax(1) for s in batches(len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def _loss_grad(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Logits ``(B, 10)`` at ``x`` and the gradient of the summed cross-entropy w.r.t. ``x``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
    return logits.detach(), grad


Objective = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]


def _target_objective(
    model: nn.Module, target: Tensor, penalty: Callable[[Tensor], Tensor],
    inputs: Callable[[Tensor], Tensor] | None = None, gain: str = "logit",
) -> Objective:
    """``v -> (gain - penalty(v), logit_target, logits)`` for the images ``inputs(v)``.

    ``gain`` is the target's pre-softmax logit (``"logit"``) or its log-softmax
    (``"ce"``, i.e. minus the cross-entropy to the target).
    """
    rows = torch.arange(len(target), device=target.device)

    def objective(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = model(v if inputs is None else inputs(v))  # (B, 10)
        logit = logits[rows, target]  # (B,)
        g = logit if gain == "logit" else logits.log_softmax(1)[rows, target]
        return g - penalty(v), logit, logits

    return objective


def _adam_ascent(
    var: Tensor, objective: Objective, steps: int, lr: float, project: Callable[[Tensor], None],
) -> tuple[Tensor, Tensor]:
    """Maximise ``objective(var)[0].sum()`` with Adam on ``var``, projecting after each step.

    Adam makes ``lr`` a per-pixel step size whatever the gradient's scale, so one
    setting works across models; samples in the batch stay independent (eval mode,
    elementwise moments). One forward/backward per step, one forward at the end.

    Args:
        var: the tensor optimised in place, ``(B, ...)``.
        objective: ``var -> (value (B,), target logit (B,), logits (B, 10))``.
        project: in-place projection of ``var`` onto the feasible set (under no_grad).

    Returns:
        The target logit per iteration ``(steps + 1, B)`` (before each step, then at
        the end), and the logits ``(B, 10)`` at the final ``var``.
    """
    var.requires_grad_(True)
    opt = torch.optim.Adam([var], lr=lr, maximize=True)
    history = []
    for _ in range(steps):
        with torch.enable_grad():
            value, logit, _ = objective(var)
            (var.grad,) = torch.autograd.grad(value.sum(), var)
        history.append(logit.detach())
        opt.step()
        with torch.no_grad():
            project(var)
    var.requires_grad_(False)
    var.grad = None
    with torch.no_grad():
        _, logit, logits = objective(var)
    history.append(logit)
    return torch.stack(history), logits


# --------------------------------------------------------------------------- class models


@dataclasses.dataclass
class ClassModelResult:
    """Class model visualisation: one image grown from noise per class."""

    images: Tensor  # (C, 1, 28, 28) pixels in [0, 1]; row k is grown for class k
    cost: Tensor  # (steps + 1, C) logit of class k for image k, per iteration
    predicted: Tensor  # (C,) argmax class of each image
    confidence: Tensor  # (C,) softmax probability of class k for image k
    probs: Tensor  # (C, 10) softmax of each image

    @property
    def success_rate(self) -> float:
        target = torch.arange(len(self.predicted), device=self.predicted.device)
        return float((self.predicted == target).float().mean())


def class_model(
    model: nn.Module, steps: int, lr: float, l2: float, init_mean: float, init_std: float,
    gen: torch.Generator | int, n_classes: int = NUM_CLASSES,
) -> ClassModelResult:
    """Grow an image per class that maximises its pre-softmax logit (Simonyan et al. 2013).

    From seeded Gaussian noise ``N(init_mean, init_std)`` clamped to [0, 1], every
    class's image is optimised in one batch by gradient ascent (Adam) on
    ``logit_k(x) - l2 * ||x||^2``, clamped to [0, 1] after every step.

    Args:
        steps: Adam iterations.
        lr: Adam step size, in pixel units.
        l2: weight of the squared L2 norm of the image.
        gen: a generator (or seed) for the starting noise.
    """
    device = model_device(model)
    noise = _rand((n_classes, 1, 28, 28), _generator(gen), device, normal=True)
    x = (init_mean + init_std * noise).clamp_(0, 1)  # (C, 1, 28, 28)
    target = torch.arange(n_classes, device=device)
    with frozen(model):
        objective = _target_objective(model, target, lambda v: l2 * _sq_norm(v))
        cost, logits = _adam_ascent(x, objective, steps, lr, lambda v: v.clamp_(0, 1))
    probs = logits.softmax(1)
    return ClassModelResult(images=x.detach(), cost=cost, predicted=probs.argmax(1),
                            confidence=probs[target, target], probs=probs)


# --------------------------------------------------------------------------- targeted


@dataclasses.dataclass
class TargetedResult:
    """Targeted adversarial examples: every original pushed towards every target."""

    targets: list[int]  # (T,)
    images: Tensor  # (T, N, 1, 28, 28) pixels in [0, 1]
    cost: Tensor  # (steps + 1, T, N) target logit per iteration
    predicted: Tensor  # (T, N)
    confidence: Tensor  # (T, N) softmax probability of the target
    l2: Tensor  # (T, N) L2 distance to the original
    linf: Tensor  # (T, N) L-inf distance to the original

    @property
    def success(self) -> Tensor:
        """``(T, N)`` bool: the example is classified as its target."""
        t = torch.tensor(self.targets, device=self.predicted.device)
        return self.predicted == t[:, None]


def targeted(
    model: nn.Module, originals: Tensor, targets: Sequence[int], steps: int, lr: float,
    beta: float,
) -> TargetedResult:
    """Push every original towards every target class, all pairs in one batch.

    Maximises ``logit_target(x) - beta * ||x - x0||^2`` with Adam from ``x = x0``,
    clamping to [0, 1] after every step.

    Args:
        originals: ``(N, 1, 28, 28)`` pixels in [0, 1].
        targets: ``T`` target classes.
        steps: Adam iterations.
        lr: Adam step size, in pixel units.
        beta: weight of the squared L2 distance to the original.
    """
    t, n = len(targets), len(originals)
    x0 = originals.detach().unsqueeze(0).expand(t, *originals.shape).reshape(t * n, 1, 28, 28)
    target = torch.tensor(list(targets), device=x0.device).repeat_interleave(n)  # (T*N,) t-major
    x = x0.clone()
    with frozen(model):
        objective = _target_objective(model, target, lambda v: beta * _sq_norm(v - x0))
        cost, logits = _adam_ascent(x, objective, steps, lr, lambda v: v.clamp_(0, 1))
    probs = logits.softmax(1)
    rows = torch.arange(t * n, device=x0.device)
    diff = (x.detach() - x0).flatten(1)
    return TargetedResult(
        targets=[int(k) for k in targets],
        images=x.detach().view(t, n, 1, 28, 28),
        cost=cost.view(-1, t, n),
        predicted=probs.argmax(1).view(t, n),
        confidence=probs[rows, target].view(t, n),
        l2=diff.norm(dim=1).view(t, n),
        linf=diff.abs().amax(1).view(t, n),
    )


# --------------------------------------------------------------------------- learned noise


@dataclasses.dataclass
class NoiseResult:
    """Learned additive noise, one per (original, target) pair."""

    targets: Tensor  # (P,)
    noise: Tensor  # (P, 1, 28, 28); x0 + noise stays in [0, 1]
    images: Tensor  # (P, 1, 28, 28) clamp(x0 + noise, 0, 1)
    cost: Tensor  # (steps + 1, P) target logit per iteration
    predicted: Tensor  # (P,)
    confidence: Tensor  # (P,) softmax probability of the target
    noise_l2: Tensor  # (P,) L2 norm of the noise

    @property
    def success(self) -> Tensor:
        return self.predicted == self.targets

    def subset(self, index: slice | Tensor | Sequence[int]) -> NoiseResult:
        """The pairs selected by ``index`` (a slice, indices or a bool mask)."""
        cost = self.cost[:, index]
        fields = {f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)
                  if f.name != "cost"}
        return NoiseResult(cost=cost, **fields)


def learn_noise(
    model: nn.Module, originals: Tensor, targets: Tensor, steps: int, lr: float, penalty: float,
    objective: str = "logit",
) -> NoiseResult:
    """Learn an additive noise per (original, target) pair, all pairs in one batch.

    Maximises ``logit_target(clamp(x0 + N, 0, 1)) - penalty * ||N||^2`` (``objective=
    "logit"``) or ``-cross_entropy(...) - penalty * ||N||^2`` (``"ce"``) with Adam
    from ``N = 0``. After every step ``N`` is projected onto ``[-x0, 1 - x0]``, so the
    clamp is the identity and ``||N||`` is the real perturbation.

    Args:
        originals: ``(P, 1, 28, 28)`` pixels in [0, 1].
        targets: ``(P,)`` target class of each pair.
        steps: Adam iterations.
        lr: Adam step size, in pixel units.
        penalty: weight of the squared L2 norm of the noise.
        objective: ``"logit"`` (the report's) or ``"ce"``.
    """
    if objective not in ("logit", "ce"):
        raise ValueError(f"objective must be 'logit' or 'ce', got {objective!r}")
    x0 = originals.detach()
    targets = torch.as_tensor(targets, device=x0.device)
    noise = torch.zeros_like(x0)
    low, high = -x0, 1 - x0

    # The projection keeps x0 + N in [0, 1], so the forward needs no clamp (whose
    # gradient is zero at the bounds, where most MNIST pixels sit: it would freeze them).
    with frozen(model):
        fn = _target_objective(model, targets, lambda v: penalty * _sq_norm(v),
                               lambda v: x0 + v, objective)
        cost, logits = _adam_ascent(noise, fn, steps, lr,
                                    lambda v: torch.clamp(v, low, high, out=v))
    probs = logits.softmax(1)
    rows = torch.arange(len(x0), device=x0.device)
    noise = noise.detach()
    return NoiseResult(targets=targets, noise=noise, images=(x0 + noise).clamp(0, 1), cost=cost,
                       predicted=probs.argmax(1), confidence=probs[rows, targets],
                       noise_l2=_sq_norm(noise).sqrt())


@torch.no_grad()
def apply_noise(model: nn.Module, images: Tensor, noise: Tensor, batch_size: int = 1000) -> Tensor:
    """Apply every noise to every image (clamped to [0, 1]) and classify.

    Args:
        images: ``(M, 1, 28, 28)`` pixels in [0, 1].
        noise: ``(K, 1, 28, 28)``.

    Returns:
        ``(M, K)`` predicted classes of ``clamp(images[m] + noise[k], 0, 1)``.
    """
    m, k = len(images), len(noise)
    x = (images[:, None] + noise[None].to(images.device)).clamp_(0, 1)  # (M, K, 1, 28, 28)
    return predict(model, x.flatten(0, 1), batch_size).view(m, k)


# --------------------------------------------------------------------------- FGSM / PGD


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, batch_size: int = 500) -> Tensor:
    """Untargeted L-inf FGSM: ``clamp(x + eps * sign(grad_x CE), 0, 1)``."""
    if eps == 0:
        return x.clone()
    out = torch.empty_like(x)
    with frozen(model):
        for s in batches(len(x), batch_size):
            _, grad = _loss_grad(model, x[s], y[s])
            out[s] = (x[s] + eps * grad.sign()).clamp_(0, 1)
    return out


def _project(adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Onto the L-inf ball of radius ``eps`` around ``x``, then onto [0, 1]."""
    return torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp_(0, 1)


def _pgd_start(x: Tensor, eps: float, random_start: bool,
               gen: torch.Generator | None) -> Tensor:
    if not random_start:
        return x.clone()
    if gen is None:
        raise ValueError("PGD with random_start needs a generator")
    delta = (2 * _rand(x.shape, gen, x.device) - 1) * eps  # uniform in [-eps, eps]
    return (x + delta).clamp_(0, 1)


def pgd(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, step_size: float,
    random_start: bool, early_stop: bool, gen: torch.Generator | None,
    batch_size: int = 500,
) -> Tensor:
    """Untargeted L-inf PGD on the cross-entropy, projected onto the eps-ball and [0, 1].

    With ``early_stop`` an image stops moving at the first iterate the model
    misclassifies (that iterate is returned), and later iterations run on the
    still-correct images only. An image never misclassified along the way follows
    exactly the textbook trajectory, so early stopping can only add successes.

    Args:
        x: ``(N, 1, 28, 28)`` pixels in [0, 1]; ``y``: ``(N,)`` true labels.
        eps: L-inf radius; 0 returns ``x`` unchanged.
        steps: iterations; ``step_size``: L-inf size of each signed-gradient step.
        random_start: start from a uniform point of the eps-ball (drawn from ``gen``
            for all ``N`` images at once, so it does not depend on ``batch_size``).
    """
    if not early_stop:
        return pgd_textbook(model, x, y, eps, steps, step_size, random_start, gen, batch_size)
    if eps == 0:
        return x.clone()
    adv = _pgd_start(x, eps, random_start, gen)
    with frozen(model):
        for s in batches(len(x), batch_size):
            active = torch.arange(s.start, s.stop, device=x.device)
            for _ in range(steps):
                logits, grad = _loss_grad(model, adv[active], y[active])
                still = logits.argmax(1) == y[active]
                active, grad = active[still], grad[still]
                if not len(active):
                    break
                adv[active] = _project(adv[active] + step_size * grad.sign(), x[active], eps)
    return adv


def pgd_textbook(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, step_size: float,
    random_start: bool, gen: torch.Generator | None, batch_size: int = 500,
) -> Tensor:
    """Plain L-inf PGD: ``steps`` projected signed-gradient steps on every image."""
    if eps == 0:
        return x.clone()
    adv = _pgd_start(x, eps, random_start, gen)
    with frozen(model):
        for s in batches(len(x), batch_size):
            xs, ys, a = x[s], y[s], adv[s]
            for _ in range(steps):
                _, grad = _loss_grad(model, a, ys)
                a = _project(a + step_size * grad.sign(), xs, eps)
            adv[s] = a
    return adv


def fgsm_attack(model: nn.Module, batch_size: int = 500) -> Attack:
    """FGSM as an ``(x, y, eps) -> x_adv`` callable for :func:`robustness_curve`."""
    return lambda x, y, eps: fgsm(model, x, y, eps, batch_size)


def pgd_attack(
    model: nn.Module, steps: int, step_ratio: float, random_start: bool, early_stop: bool,
    gen: torch.Generator | None, batch_size: int = 500,
) -> Attack:
    """PGD with ``step_size = step_ratio * eps`` as an ``(x, y, eps) -> x_adv`` callable."""
    return lambda x, y, eps: pgd(model, x, y, eps, steps, step_ratio * eps, random_start,
                                 early_stop, gen, batch_size)


def robustness_curve(
    model: nn.Module, x: Tensor, y: Tensor, eps_grid: Sequence[float], attack: Attack,
    batch_size: int,
) -> list[dict]:
    """Robust accuracy of ``model`` under ``attack`` at every eps.

    Args:
        x: ``(N, 1, 28, 28)`` pixels in [0, 1]; ``y``: ``(N,)`` labels.
        attack: ``(x, y, eps) -> x_adv``, called on chunks of ``batch_size`` images.

    Returns:
        One row per eps: ``eps``, ``robust_accuracy`` (fraction of all ``N`` images
        still correct), ``mean_l2_success`` (mean L2 distance of the adversarial
        examples the model gets wrong, 0.0 when none), ``mean_linf_success`` and
        ``seconds`` (attack and scoring time).
    """
    rows = []
    for eps in eps_grid:
        start = time.perf_counter()
        correct, l2, linf = 0, [], []
        for s in batches(len(x), batch_size):
            adv = attack(x[s], y[s], eps)
            wrong = predict(model, adv, batch_size) != y[s]
            correct += int((~wrong).sum())
            diff = (adv - x[s])[wrong].flatten(1)
            l2.append(diff.norm(dim=1))
            linf.append(diff.abs().amax(1) if len(diff) else diff.sum(1))
        l2_all, linf_all = torch.cat(l2), torch.cat(linf)
        rows.append({
            "eps": float(eps),
            "robust_accuracy": correct / max(len(x), 1),
            "mean_l2_success": float(l2_all.mean()) if len(l2_all) else 0.0,
            "mean_linf_success": float(linf_all.mean()) if len(linf_all) else 0.0,
            "seconds": time.perf_counter() - start,
        })
    return rows


# --------------------------------------------------------------------------- picking images


def _as_pixels(images: Tensor) -> Tensor:
    """uint8 ``(N, 28, 28)`` or pixels ``(N, 1, 28, 28)`` -> float pixels ``(N, 1, 28, 28)``."""
    return to_pixels(images) if images.dtype == torch.uint8 else images.float()


def _correct_on_all(models: Sequence[nn.Module], images: Tensor, labels: Tensor) -> Tensor:
    ok = torch.ones(len(labels), dtype=torch.bool)
    x = _as_pixels(images)
    for m in models:
        ok &= predict(m, x.to(model_device(m))).cpu() == labels
    return ok


def pick_images(
    images: Tensor, labels: Tensor, wanted: Sequence[int], seed: int | torch.Generator,
    models: nn.Module | Sequence[nn.Module] = (), exclude_indices: Sequence[int] = (),
) -> Tensor:
    """Distinct seeded image indices, one per entry of ``wanted`` (a class, repeats allowed).

    Walks one seeded permutation of the data and takes, per class, the first images
    that every model in ``models`` classifies correctly. The order depends only on
    the seed and the data; the models only veto, so passing both models picks images
    both get right, the same for either.

    Args:
        images: uint8 ``(N, 28, 28)`` or pixels ``(N, 1, 28, 28)``.
        labels: ``(N,)`` true labels.
        wanted: the class of each image to pick.
        seed: an int or a generator for the permutation.
        models: none, one, or several models that must classify each pick correctly.
        exclude_indices: indices never picked.

    Raises:
        ValueError: not enough (correctly classified) images of some class.
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    gen = _generator(seed)
    labels = labels.cpu()
    order = torch.randperm(len(labels), generator=gen, device=gen.device).cpu()
    if len(exclude_indices):
        order = order[~torch.isin(order, torch.as_tensor(list(exclude_indices)))]
    need = Counter(int(c) for c in wanted)
    chosen: dict[int, Tensor] = {}
    budget = 2 * max(need.values(), default=0) + 8
    while len(chosen) < len(need):
        cand = {c: order[labels[order] == c][:budget] for c in need if c not in chosen}
        flat = torch.cat(list(cand.values()))
        ok = _correct_on_all(models, images[flat], labels[flat]).split(
            [len(v) for v in cand.values()])
        for (c, idx), good in zip(cand.items(), ok, strict=True):
            if int(good.sum()) >= need[c]:
                chosen[c] = idx[good][: need[c]]
            elif len(idx) < budget:  # every image of the class was tried
                raise ValueError(f"only {int(good.sum())} usable images of class {c}, "
                                 f"need {need[c]}")
        budget *= 4
    used = Counter()
    out = []
    for c in wanted:
        out.append(int(chosen[int(c)][used[int(c)]]))
        used[int(c)] += 1
    return torch.tensor(out, dtype=torch.long)


def pick_per_class(
    images: Tensor, labels: Tensor, models: nn.Module | Sequence[nn.Module],
    classes: Sequence[int], seed: int | torch.Generator,
) -> Tensor:
    """One seeded image per class in ``classes``, classified correctly by every model.

    Returns:
        ``(len(classes),)`` indices into ``images``.
    """
    return pick_images(images, labels, classes, seed, models)


def pick_transfer_images(
    images: Tensor, labels: Tensor, source: int, n_same: int, n_other: int,
    seed: int | torch.Generator, models: nn.Module | Sequence[nn.Module] = (),
    exclude_classes: Sequence[int] = (), exclude_indices: Sequence[int] = (),
) -> Tensor:
    """Seeded images for the noise-transfer test (report fig. 20).

    ``n_same`` images of class ``source`` then ``n_other`` images of other classes,
    drawn without repeats (while classes last) from the classes other than ``source``
    and ``exclude_classes``; optionally only images every model gets right.

    Returns:
        ``(n_same + n_other,)`` indices into ``images``.
    """
    gen = _generator(seed)
    others = [c for c in range(NUM_CLASSES) if c != source and c not in exclude_classes]
    if n_other and not others:
        raise ValueError("no classes left for the other-class transfer images")
    perm = torch.randperm(len(others), generator=gen, device=gen.device).tolist()
    other = [others[perm[i % len(others)]] for i in range(n_other)]
    return pick_images(images, labels, [source] * n_same + other, gen, models, exclude_indices)
