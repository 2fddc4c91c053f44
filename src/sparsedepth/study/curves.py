"""Learning curves at matched compute: validation loss against the training FLOPs each arm had spent.

Why a figure of its own: under a FLOP budget arms take different numbers of steps, so a curve against steps
would compare unequal compute; against FLOPs it shows whether runs are past the fast-falling part of
training, which is what makes a seed-to-seed comparison stable enough to decide.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

CURVE_COLUMNS = ("model", "variant", "dataset", "seed", "step", "steps", "train_flops", "val_loss")


def curve_points(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (model, dataset, arm) at each validation point. Points are matched by their rank
    within a run: every arm evaluates at the same fractions of its budget."""
    missing = [c for c in CURVE_COLUMNS if c not in curves.columns]
    if missing:
        raise ValueError(f"curves table lacks column(s) {', '.join(missing)} (see docs/CONTRACT.md)")
    df = curves.dropna(subset=["train_flops", "val_loss"]).copy()
    df["point"] = df.groupby(["model", "dataset", "variant", "seed"]).cumcount()
    points = (df.groupby(["model", "dataset", "variant", "point"], sort=True)
              .agg(train_flops=("train_flops", "mean"), val_loss=("val_loss", "mean"),
                   val_loss_sd=("val_loss", "std"), n_seeds=("seed", "nunique"))
              .reset_index())
    return points


def figure_learning_curve(curves: pd.DataFrame) -> Figure:
    from ..figures import arm_palette, message_figure
    from ..tables import arm_order

    if curves.empty:
        return message_figure("no learning curves: results/curves.csv is missing or empty")
    points = curve_points(curves)
    if points.empty:
        return message_figure("no learning curve has training FLOPs recorded (runs predate the budget)")
    cells = points[["model", "dataset"]].drop_duplicates().to_records(index=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cells), figsize=(6.0 * len(cells), 3.6), squeeze=False)
    palette = arm_palette(arm_order(points["variant"].unique()))
    for ax, (model, dataset) in zip(axes[0], cells, strict=True):
        cell = points[(points["model"] == model) & (points["dataset"] == dataset)]
        for variant in arm_order(cell["variant"].unique()):
            g = cell[cell["variant"] == variant]
            ax.plot(g["train_flops"], g["val_loss"], marker="o", markersize=3, lw=1.2,
                    color=palette[variant], label=f"{variant} ({int(g['n_seeds'].max())})")
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs spent")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(f"{model} / {dataset}", fontsize=9)
    axes[0][-1].legend(fontsize=7, title="arm (seeds)", title_fontsize=7, loc="upper right", frameon=False)
    fig.tight_layout()
    return fig
