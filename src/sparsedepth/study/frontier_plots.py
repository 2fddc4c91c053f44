"""Figures of the isoFLOP frontier: the profiles with their fitted parabolas, and the frontier per budget.

Why drawn from the CSVs alone: the parabolas are redrawn from the fit coefficients in results/frontier.csv
(bpb = a + b·x + c·x², x = log10 N), so the figure shows exactly the fit the table reports; an optimum the
sweep did not bracket gets no marker, and the panel says so.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .plots import arm_palette, message_figure
from .results import arm_order, require

PROFILE_NEEDS = ("dataset", "budget", "budget_flops", "arm", "n_params", "bpb", "bpb_sd")
FRONTIER_NEEDS = ("dataset", "budget", "budget_flops", "arm", "bracketed", "fit_a", "fit_b", "fit_c",
                  "frontier_bpb", "frontier_ci_low", "frontier_ci_high", "n_star", "n_star_ci_low",
                  "n_star_ci_high")


def _dataset(df: pd.DataFrame, dataset: str | None) -> str:
    """The dataset drawn: the one asked for, else the one with most budgets (the confirmatory sweep)."""
    if dataset is not None:
        return dataset
    return str(df.groupby("dataset")["budget"].nunique().sort_values(ascending=False, kind="stable").index[0])


def figure_isoflop(profiles: pd.DataFrame, frontier: pd.DataFrame, baseline: str | None = None,
                   dataset: str | None = None) -> Figure:
    """One panel per budget: bpb against parameters (log x), mean ± per-seed sd per size and arm, the
    fitted parabola over the sweep, and the optimum with its 95 % CIs in N* and bpb (MoD Fig. 3)."""
    if profiles.empty:
        return message_figure("no isoFLOP profiles: results/isoflop.csv is missing or empty")
    require(profiles, PROFILE_NEEDS, "isoflop profiles")
    if not frontier.empty:
        require(frontier, FRONTIER_NEEDS, "frontier table")
    ds = _dataset(profiles, dataset)
    prof = profiles[profiles["dataset"] == ds]
    if prof.empty:
        return message_figure(f"no isoFLOP profiles of dataset {ds}")
    fits = frontier[frontier["dataset"] == ds] if not frontier.empty else frontier
    budgets = prof.drop_duplicates("budget").sort_values("budget_flops")["budget"].tolist()
    arms = arm_order(prof["arm"], baseline)
    colours = arm_palette(arms, baseline)
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.2 * len(budgets) + 1.4, 3.0), squeeze=False,
                             sharey=True)
    for ax, budget in zip(axes[0], budgets, strict=True):
        here = prof[prof["budget"] == budget]
        notes = []
        for arm in arms:
            pts = here[here["arm"] == arm].sort_values("n_params")
            if pts.empty:
                continue
            ax.errorbar(pts["n_params"], pts["bpb"], yerr=np.nan_to_num(pts["bpb_sd"]), fmt="o", ms=4,
                        color=colours[arm], label=arm, capsize=2)
            fit = fits[(fits["budget"] == budget) & (fits["arm"] == arm)] if not fits.empty else fits
            if fit.empty:
                continue
            f = fit.iloc[0]
            x = np.linspace(np.log10(pts["n_params"].min()), np.log10(pts["n_params"].max()), 100)
            ax.plot(10**x, f["fit_a"] + f["fit_b"] * x + f["fit_c"] * x * x, color=colours[arm], lw=1,
                    alpha=0.8)
            if bool(f["bracketed"]):
                ax.errorbar([f["n_star"]], [f["frontier_bpb"]],
                            xerr=[[f["n_star"] - f["n_star_ci_low"]], [f["n_star_ci_high"] - f["n_star"]]],
                            yerr=[[f["frontier_bpb"] - f["frontier_ci_low"]],
                                  [f["frontier_ci_high"] - f["frontier_bpb"]]],
                            fmt="*", ms=9, color=colours[arm], mec="black", mew=0.5, capsize=2)
            else:
                notes.append(f"{arm}: not bracketed")
        ax.set_xscale("log")
        ax.set_title(f"{budget} ({here['budget_flops'].iloc[0]:.2g} FLOPs)", fontsize=9)
        ax.set_xlabel("parameters")
        if notes:
            ax.text(0.02, 0.98, "\n".join(notes), transform=ax.transAxes, va="top", fontsize=7, color="0.3")
    axes[0, 0].set_ylabel(f"{ds}: {prof['split'].iloc[0] if 'split' in prof else ''} bits/byte")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False,
               title="arm")
    fig.tight_layout()
    return fig


def figure_frontier(frontier: pd.DataFrame, baseline: str | None = None) -> Figure:
    """Optimal bpb against training FLOPs (log x), one line per arm with 95 % CIs, one panel per dataset;
    unbracketed budgets are left out of the line and listed in the panel."""
    if frontier.empty:
        return message_figure("no isoFLOP frontier: results/frontier.csv is missing or empty")
    require(frontier, FRONTIER_NEEDS, "frontier table")
    datasets = sorted(frontier["dataset"].unique())
    arms = arm_order(frontier["arm"], baseline)
    colours = arm_palette(arms, baseline)
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.6 * len(datasets) + 1.4, 3.0), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        here = frontier[frontier["dataset"] == ds]
        missing = []
        for i, arm in enumerate(arms):
            rows = here[here["arm"] == arm].sort_values("budget_flops")
            ok = rows[rows["bracketed"].astype(bool)]
            missing += [f"{arm} at {b}" for b in rows.loc[~rows["bracketed"].astype(bool), "budget"]]
            if ok.empty:
                continue
            dodge = 1.04 ** (i - (len(arms) - 1) / 2)  # arms side by side at a budget, not on top
            ax.errorbar(ok["budget_flops"] * dodge, ok["frontier_bpb"],
                        yerr=[ok["frontier_bpb"] - ok["frontier_ci_low"], ok["frontier_ci_high"] -
                              ok["frontier_bpb"]], fmt="o-", ms=4, color=colours[arm], label=arm, capsize=2)
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_title(ds, fontsize=9)
        ax.set_ylabel("optimal bits/byte")
        if missing:
            ax.text(0.02, 0.02, "not bracketed: " + ", ".join(missing), transform=ax.transAxes, fontsize=7,
                    color="0.3", wrap=True)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False,
                   title="arm")
    fig.tight_layout()
    return fig
