"""Training curves (the report's figures 1-2 and 5-6)."""

from __future__ import annotations

from matplotlib.figure import Figure

from mnistlab.core.figures import new_figure
from mnistlab.train import TrainResult


def loss_curves(res: TrainResult, model: str) -> Figure:
    """Training and validation loss (cross-entropy) against iterations."""
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    ax.plot(res.train_steps, res.train_loss, label="training loss", lw=1.2)
    ax.plot(res.val_steps, res.val_loss, "o-", label="validation loss", lw=1.5)
    ax.set(
        xlabel="iteration",
        ylabel="cross-entropy loss",
        yscale="log",
        title=f"{model}: training and validation loss",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def val_accuracy(res: TrainResult, model: str) -> Figure:
    """Validation accuracy against epochs."""
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    ax.plot(res.val_epoch, [100 * a for a in res.val_accuracy], "o-")
    for e, a in zip(res.val_epoch, res.val_accuracy, strict=True):
        ax.annotate(
            f"{100 * a:.2f}",
            (e, 100 * a),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=f"{model}: validation accuracy")
    ax.grid(alpha=0.3)
    return fig
