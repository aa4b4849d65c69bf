"""Figures of the strong evaluation: ``plots/attack/strong-<model>/<name>.png``."""

from __future__ import annotations

from matplotlib.figure import Figure

from mnistlab.core.figures import new_figure


def robust_accuracy(rows: list[dict], *, pgd_steps: int, title: str = "") -> Figure:
    """Robust accuracy against eps: PGD alone, then each member added, Square last."""
    fig = new_figure(5.5, 3.6)
    ax = fig.add_subplot()
    eps = [r["eps"] for r in rows]
    for key, label, style in [
        ("pgd_accuracy", f"PGD-{pgd_steps}", "o--"),
        ("apgd_ce_accuracy", "+ APGD-CE", "s-."),
        ("apgd_accuracy", "+ APGD-DLR-T", "^:"),
        ("strong_accuracy", "+ Square (worst case)", "D-"),
    ]:
        ax.plot(eps, [100 * r[key] for r in rows], style, label=label)
    ax.set(
        xlabel="L-inf eps",
        ylabel="robust accuracy (%)",
        ylim=(-2, 102),
        title=title or "Robust accuracy: PGD vs the strong ensemble",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
