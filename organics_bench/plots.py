"""Figures a person can read: training curves of one or several runs."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt

from organics_bench.io import atomic_path

plt.switch_backend("Agg")  # files only, on machines with or without a display


def plot_training_curves(runs: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """Train loss, validation accuracy and max gradient norm per epoch, one line per run label; an epoch whose
    value is not finite (an overflowing gradient norm, a NaN loss) is an x on the panel's top edge."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    panels = (
        ("train_loss", "train loss (cross-entropy)", "linear"),
        ("val_acc", "validation accuracy", "linear"),
        ("grad_norm_max", "max gradient L2 norm in epoch (no clipping)", "log"),
    )
    for label, rows in runs.items():
        epochs = [int(row["epoch"]) for row in rows]
        for ax, (key, _, _) in zip(axes, panels):
            values = [float(row[key]) for row in rows]
            (line,) = ax.plot(epochs, values, marker="o", markersize=3, label=label)
            nonfinite = [epoch for epoch, value in zip(epochs, values) if not math.isfinite(value)]
            if nonfinite:
                ax.plot(
                    nonfinite,
                    [1.0] * len(nonfinite),
                    "x",
                    color=line.get_color(),
                    transform=ax.get_xaxis_transform(),  # x in epochs, y on the top edge
                    clip_on=False,
                    label=f"{label}: not finite",
                )
    for ax, (_, ylabel, scale) in zip(axes, panels):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_yscale(scale)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save atomically as PNG and close the figure."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path
