"""Strong L-inf evaluation: Auto-PGD (Croce and Hein 2020), an APGD-CE + APGD-T(DLR)
ensemble, and a per-image minimal eps by batched binary search.

The public names of the strong attacks, from :mod:`mnistlab.core.autopgd` (one APGD
run, shared with adversarial training's per-epoch check), :mod:`.ensemble` (the worst
case over attacks and restarts) and :mod:`.min_eps` (the binary search).

Conventions (as in ``mnistlab.attacks``): pixels in [0, 1] shaped ``(B, 1, 28, 28)``,
outputs kept in [0, 1] and within ``eps`` of the input; the model runs in eval mode
with its parameters frozen for the duration of a call (gradients are taken with
respect to the input only) and its state is restored afterwards; randomness comes
only from a ``torch.Generator`` argument; tensors stay on the device of the inputs.
``eps`` may be a float or a per-image ``(N,)`` tensor everywhere.

Reference: F. Croce, M. Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020 (Algorithm 1, section 3).
"""

from __future__ import annotations

from mnistlab.attacks.strong.ensemble import ATTACKS, StrongResult, strong_attack, strong_attack_fn
from mnistlab.attacks.strong.min_eps import RobustFn, minimal_eps
from mnistlab.core.autopgd import Loss, apgd, checkpoints

__all__ = [
    "ATTACKS",
    "Loss",
    "RobustFn",
    "StrongResult",
    "apgd",
    "checkpoints",
    "minimal_eps",
    "strong_attack",
    "strong_attack_fn",
]
