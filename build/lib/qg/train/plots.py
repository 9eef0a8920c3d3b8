"""The loss curve the model card shows."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from qg.io import atomic_file  # noqa: E402


def plot_loss_curve(records: list[dict], path) -> None:
    """Train loss per logged step and validation loss where it was measured, as a PNG."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], label="train loss")
    evaluated = [r for r in records if "eval_loss" in r]
    if evaluated:
        ax.plot([r["step"] for r in evaluated], [r["eval_loss"] for r in evaluated], "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss per question token")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
