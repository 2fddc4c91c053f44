"""Learning curves at matched compute: validation loss against the training FLOPs each arm had spent.

Why a figure of its own: under a FLOP budget arms take different numbers of steps, so a curve against steps
would compare unequal compute; against FLOPs it shows whether runs are past the fast-falling part of
training, which is what makes a seed-to-seed comparison stable enough to decide.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .results import arm_order

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


def figure_learning_curve(curves: pd.DataFrame, baseline: str | None = None) -> Figure:
    from .plots import arm_palette, message_figure

    if curves.empty:
        return message_figure("no learning curves: results/curves.csv is missing or empty")
    points = curve_points(curves)
    if points.empty:
        return message_figure("no learning curve has training FLOPs recorded (runs predate the budget)")
    cells = points[["model", "dataset"]].drop_duplicates().to_records(index=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cells), figsize=(6.0 * len(cells), 3.6), squeeze=False)
    palette = arm_palette(arm_order(points["variant"].unique(), baseline), baseline)
    for ax, (model, dataset) in zip(axes[0], cells, strict=True):
        cell = points[(points["model"] == model) & (points["dataset"] == dataset)]
        for variant in arm_order(cell["variant"].unique(), baseline):
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


def equal_steps(curves: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The secondary, equal-steps view: every arm's validation loss after as many optimizer steps as the
    baseline took, read off its own learning curve by linear interpolation in steps (mean over seeds).
    An arm that took fewer steps than the baseline has no such point (NaN): nothing is extrapolated."""
    missing = [c for c in CURVE_COLUMNS if c not in curves.columns]
    if missing:
        raise ValueError(f"curves table lacks column(s) {', '.join(missing)} (see docs/CONTRACT.md)")
    rows = []
    for (model, dataset), cell in curves.groupby(["model", "dataset"], sort=True):
        base = cell[cell["variant"] == baseline]
        if base.empty:
            continue
        target = float(base["steps"].max())
        dense_loss = base.groupby("seed")["val_loss"].last().mean()
        for variant, g in cell.groupby("variant", sort=True):
            at = []
            for _, run in g.groupby("seed"):
                run = run.sort_values("step")
                reachable = run["step"].max() >= target
                at.append(float(np.interp(target, run["step"], run["val_loss"])) if reachable else np.nan)
            loss = float(np.mean(at)) if at and not np.isnan(at).any() else np.nan
            rows.append({"model": model, "dataset": dataset, "arm": variant, "steps": target,
                         "arm_steps": float(g["steps"].max()), "val_loss": loss,
                         "delta": loss - dense_loss if variant != baseline else 0.0,
                         "n_seeds": g["seed"].nunique()})
    return pd.DataFrame(rows, columns=["model", "dataset", "arm", "steps", "arm_steps", "val_loss", "delta",
                                       "n_seeds"])


def format_equal_steps(table: pd.DataFrame, baseline: str) -> str:
    from .latex import NA, empty_table, escape_latex, fmt_int, fmt_num, fmt_signed, to_latex

    base = escape_latex(baseline)
    if table.empty:
        return empty_table(f"Every arm after as many steps as {base}.", "tab:equal-steps",
                           "no learning curves: results/curves.csv is missing or empty")
    order = {arm: i for i, arm in enumerate(arm_order(table["arm"].unique(), baseline))}
    table = table.assign(_order=table["arm"].map(order)).sort_values(["model", "dataset", "_order"])
    keys = pd.DataFrame({name: table[c].map(escape_latex).to_numpy()
                         for name, c in (("Model", "model"), ("Dataset", "dataset"), ("Arm", "arm"))})
    disp = pd.DataFrame({
        "Steps (own budget)": [fmt_int(x) for x in table["arm_steps"]],
        f"Val. loss at {base}'s steps": [fmt_num(x, 3) if np.isfinite(x) else NA for x in table["val_loss"]],
        rf"$\Delta$ vs {base}": [fmt_signed(x, 3) if np.isfinite(x) else NA for x in table["delta"]],
    })
    caption = ("Secondary, equal-steps view: each arm's validation loss (nats/token, the in-training "
               f"validation batches, mean over seeds) after as many optimizer steps as {base} took, read off "
               "its own learning curve; its learning-rate schedule spans its own, compute-matched budget, so "
               "this is a view of the same runs, not a separate equal-steps training. Arms that took fewer "
               f"steps than {base} have no such point.")
    return to_latex(pd.concat([keys, disp], axis=1), 3, caption, "tab:equal-steps")


def last_drop(curves: pd.DataFrame, baseline: str) -> float:
    """How much the baseline's validation loss still fell between its last two validations (relative, mean
    over seeds): near 0 means training converged; a few percent means the budget ends mid-descent."""
    base = curves[curves["variant"] == baseline].sort_values("step")
    drops = [(g["val_loss"].iloc[-2] - g["val_loss"].iloc[-1]) / g["val_loss"].iloc[-2]
             for _, g in base.groupby(["model", "dataset", "seed"]) if len(g) >= 2]
    return float(np.mean(drops)) if drops else float("nan")
