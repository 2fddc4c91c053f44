"""Plots of the paper: pure functions from tidy tables (or probe results) to a matplotlib `Figure`.

Why apart from the probes: a style change here never loads or runs a model, and every figure says in the
figure why it is empty (no runs, no GPU benchmark rows) instead of inventing anything.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from ..atomic import write_with
from .results import DENSE_ROUTER, arm_order, base_variant, ci_half_width, require

KINDS = ("train_step", "prefill", "decode")
DEVICES = ("cpu", "cuda")
NO_GPU = "not measured: no GPU in this run"
RUN_SKIP_COLOURS = ("#e6e6e6", "#2b5d8a")  # skip, run


# --- shared helpers ---


def arm_palette(arms: Sequence[str], baseline: str | None = None) -> dict[str, tuple]:
    """One colour per trained variant (an arm's inference modes share it), stable across figures."""
    variants = list(dict.fromkeys(base_variant(a) for a in arm_order(arms, baseline)))
    name = "tab10" if len(variants) <= 10 else "tab20" if len(variants) <= 20 else "husl"  # never cycle
    colours = sns.color_palette(name, max(10, len(variants)))
    by_variant = {v: colours[i % len(colours)] for i, v in enumerate(variants)}
    return {a: by_variant[base_variant(a)] for a in arms}


def arm_marker(arm: str) -> str:
    return "X" if "[" in arm else "o"


def message_axis(ax, text: str) -> None:
    """An empty panel that states why it is empty."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.3",
            wrap=True)


def message_figure(text: str, title: str | None = None, size=(6.0, 2.0)) -> Figure:
    fig, ax = plt.subplots(figsize=size)
    message_axis(ax, text)
    if title:
        ax.set_title(title)
    return fig


def tick_label(token: str) -> str:
    """A token as an axis label: visible whitespace, no accidental mathtext."""
    return token.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "\u00b7").replace("$", r"\$") or "∅"


def save(fig: Figure, out: str | Path) -> tuple[Path, Path]:
    """Write `out` as PDF and its `.png` sibling, atomically; no creation dates, so reruns are byte-stable."""
    pdf = write_with(Path(out).with_suffix(".pdf"), lambda tmp: fig.savefig(
        tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None, "ModDate": None}))
    png = write_with(pdf.with_suffix(".png"), lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight",
                                                                       dpi=150))
    plt.close(fig)
    return pdf, png


# --- Pareto: validation loss against cost ---

RUNS_COLUMNS = ("model", "dataset", "arm", "seed", "mode", "router")


def arm_points(runs: pd.DataFrame, x: str, y: str = "val_loss") -> pd.DataFrame:
    """Mean ± 95 % CI half-width over seeds of `x` and `y`, one row per (model, dataset, arm)."""
    require(runs, (*RUNS_COLUMNS, x, y), "runs table")
    df = runs.dropna(subset=[x, y])
    rows = []
    for (model, dataset, arm), g in df.groupby(["model", "dataset", "arm"], sort=True):
        rows.append({
            "model": model, "dataset": dataset, "arm": arm, "router": g["router"].iloc[0],
            "mode": g["mode"].iloc[0], "n_seeds": g["seed"].nunique(),
            "x": g[x].mean(), "x_ci": ci_half_width(g[x]), "y": g[y].mean(), "y_ci": ci_half_width(g[y]),
        })
    return pd.DataFrame(rows, columns=["model", "dataset", "arm", "router", "mode", "n_seeds", "x", "x_ci",
                                       "y", "y_ci"])


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Arms not dominated within their (model, dataset) cell: no other arm is cheaper *and* better."""
    keep = []
    for _, g in points.groupby(["model", "dataset"], sort=False):
        best = math.inf
        for idx, row in g.sort_values(["x", "y"]).iterrows():
            if row["y"] < best:
                keep.append(idx)
                best = row["y"]
    return points.loc[keep].sort_values(["model", "dataset", "x"])


def plot_cost_loss(points: pd.DataFrame, xlabel: str, ylabel: str = "validation loss",
                   baseline: str | None = None, title: str | None = None) -> Figure:
    """Facets (model × dataset); per arm mean ± CI over seeds; the Pareto front as a line."""
    if points.empty:
        return message_figure("no runs to plot: results/runs.csv is missing or empty", title)
    models = sorted(points["model"].unique())
    datasets = sorted(points["dataset"].unique())
    fig, axes = plt.subplots(len(models), len(datasets), figsize=(3.4 * len(datasets) + 1.6,
                             2.8 * len(models)), squeeze=False)
    palette = arm_palette(points["arm"], baseline)
    front = pareto_front(points)
    handles = {}
    for r, model in enumerate(models):
        for c, dataset in enumerate(datasets):
            ax = axes[r][c]
            cell = points[(points["model"] == model) & (points["dataset"] == dataset)]
            ax.set_title(f"{model} / {dataset}", fontsize=9)
            if cell.empty:
                message_axis(ax, "no runs in this cell")
                continue
            f = front[(front["model"] == model) & (front["dataset"] == dataset)]
            ax.plot(f["x"], f["y"], "-", color="0.55", lw=1, zorder=1, label="Pareto front")
            for arm in arm_order(cell["arm"], baseline):
                p = cell[cell["arm"] == arm].iloc[0]
                h = ax.errorbar(p["x"], p["y"], xerr=np.nan_to_num(p["x_ci"]), yerr=np.nan_to_num(p["y_ci"]),
                                fmt=arm_marker(arm), color=palette[arm], ms=6, capsize=2, lw=1, zorder=2,
                                label=arm)
                handles.setdefault(arm, h)
            ax.xaxis.set_major_formatter(EngFormatter(places=1))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
    handles["Pareto front"] = plt.Line2D([], [], color="0.55", lw=1)
    order = [*arm_order([a for a in handles if a != "Pareto front"], baseline), "Pareto front"]
    n_seeds = sorted(points["n_seeds"].unique())
    seeds = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}–{n_seeds[-1]}"
    fig.legend([handles[a] for a in order], order, loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8, title=f"arm (mean ± 95% CI,\n{seeds} seeds)", title_fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def figure_pareto(runs: pd.DataFrame, baseline: str | None = None) -> Figure:
    if runs.empty:
        return plot_cost_loss(pd.DataFrame(), "")
    return plot_cost_loss(arm_points(runs, "flops_per_token", "test_bpb"), "inference FLOPs / token",
                          "test bits per byte", baseline)


def figure_train_flops(runs: pd.DataFrame, baseline: str | None = None) -> Figure:
    if runs.empty:
        return plot_cost_loss(pd.DataFrame(), "")
    return plot_cost_loss(arm_points(runs, "train_flops", "test_bpb"), "training FLOPs spent (whole run)",
                          "test bits per byte", baseline)


def plot_layers_hist(samples: pd.DataFrame, baseline: str | None = None,
                     title: str | None = None) -> Figure:
    if samples.empty:
        return message_figure("no finished run directory (model.safetensors) to measure layers per token",
                              title)
    n_layers = int(samples["n_layers"].max())
    arms = arm_order(samples["arm"], baseline)
    palette = arm_palette(arms, baseline)
    means = samples.groupby("arm")["layers"].mean()
    labels = {a: f"{a} (mean {means[a]:.2f})" for a in arms}
    data = samples.assign(arm=samples["arm"].map(labels))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * (n_layers + 1)), 3.0))
    sns.histplot(data=data, x="layers", hue="arm", hue_order=[labels[a] for a in arms],
                 palette={labels[a]: palette[a] for a in arms}, discrete=True, stat="probability",
                 common_norm=False, multiple="dodge", shrink=0.85, ax=ax)
    ax.set_xticks(range(n_layers + 1))
    ax.set_xlim(-0.6, n_layers + 0.6)
    ax.set_xlabel(f"blocks run per token (of {n_layers})")
    ax.set_ylabel("fraction of validation tokens")
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8, title="arm")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# --- routing map ---


def plot_routing_map(maps: list[dict], missing: Sequence[str] = (), title: str | None = None) -> Figure:
    """One panel per arm: layers (rows) × tokens (columns), dark = the token ran the block."""
    n = len(maps) + len(missing)
    if n == 0:
        return message_figure("no finished run directory to draw a routing map from", title)
    width = max(6.0, 0.17 * max((len(m["tokens"]) for m in maps), default=48) + 1.5)
    heights = [0.25 * m["routing"].shape[1] + 1.4 for m in maps] + [0.8] * len(missing)
    fig, axes = plt.subplots(n, 1, figsize=(width, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    cmap = ListedColormap(RUN_SKIP_COLOURS)
    for ax, m in zip(axes[:, 0], maps, strict=False):
        grid = m["routing"].T.astype(float)  # [L, T]
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        L, T = grid.shape
        rows = [f"{i}*" if i in m["routed_layers"] else str(i) for i in range(L)]
        ax.set_yticks(range(L), rows, fontsize=7)
        ax.set_xticks(range(T), [tick_label(t) for t in m["tokens"]], rotation=90, fontsize=6)
        ax.set_xticks(np.arange(-0.5, T, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, L, 1), minor=True)
        ax.grid(which="minor", color="white", lw=0.5)
        ax.grid(which="major", visible=False)
        ax.tick_params(which="minor", length=0)
        ax.set_ylabel("block")
        ax.set_title(f"{m['arm']}: {grid.sum(0).mean():.2f} blocks / token on this text", fontsize=8,
                     loc="left")
    for ax, variant in zip(axes[len(maps):, 0], missing, strict=False):
        message_axis(ax, f"{variant}: no finished run in this cell")
    handles = [plt.Rectangle((0, 0), 1, 1, color=RUN_SKIP_COLOURS[1]),
               plt.Rectangle((0, 0), 1, 1, color=RUN_SKIP_COLOURS[0])]
    fig.suptitle(title or "routing on a validation text (* = routed block)", fontsize=9, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.legend(handles, ["ran the block", "skipped"], loc="lower center", ncol=2, fontsize=8, frameon=False)
    return fig


# --- attention of one routed block ---


def plot_attention(att: dict, tokens: Sequence[str], title: str | None = None) -> Figure:
    """Top: the whole sequence, gathered tokens marked. Bottom: head-averaged attention among the gathered
    tokens, axes labelled with their original positions."""
    probs = att["probs"].mean(0)  # heads averaged: [K, K]
    pos = [int(p) for p in att["positions"]]
    K, T = len(pos), len(tokens)
    labels = [f"{p}:{tick_label(tokens[p])}" for p in pos]
    side = max(4.0, 0.22 * K + 1.8)
    fig, (top, ax) = plt.subplots(2, 1, figsize=(max(side, 0.16 * T + 1.5), side + 1.2),
                                  gridspec_kw={"height_ratios": [0.5, side]})
    top.imshow(att["ran"][None, :].astype(float), cmap=ListedColormap(RUN_SKIP_COLOURS), vmin=0, vmax=1,
               aspect="auto", interpolation="nearest")
    top.set_yticks([])
    top.set_xticks(range(T), [tick_label(t) for t in tokens], rotation=90, fontsize=6)
    top.set_title(f"block {att['layer']}: {K} of {T} tokens gathered (dark)", fontsize=8, loc="left")
    masked = np.ma.masked_where(np.triu(np.ones((K, K), dtype=bool), 1), probs)
    im = ax.imshow(masked, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(K), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(K), labels, fontsize=6)
    ax.set_xlabel("key (original position: token)")
    ax.set_ylabel("query (original position: token)")
    ax.grid(False)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="attention (mean over heads)")
    fig.suptitle(title or "attention among the tokens a routed block gathered", fontsize=9, x=0.02, ha="left")
    fig.tight_layout()
    return fig


# --- speed ---

BENCH_COLUMNS = ("device", "device_name", "kind", "impl", "router", "capacity", "batch", "seq_len", "speedup")


def speed_points(bench: pd.DataFrame) -> pd.DataFrame:
    """Routed rows of the benchmark with a display label (router, capacity when several, impl when not the
    gathered one); the dense rows are the reference (speedup 1) and are left out."""
    if bench.empty:
        return pd.DataFrame(columns=[*BENCH_COLUMNS, "label"])
    require(bench, BENCH_COLUMNS, "bench table")
    df = bench[bench["router"] != DENSE_ROUTER].copy()
    several = df.groupby("router")["capacity"].nunique()
    grids = df["grid"] if "grid" in df else pd.Series("main", index=df.index)
    df["label"] = [
        r + (f"@{c:g}" if several.get(r, 1) > 1 else "") + ("" if i == "gather" else f" [{i}]")
        + ("" if g == "main" else f" ({g} grid)")
        for r, c, i, g in zip(df["router"], df["capacity"], df["impl"], grids, strict=True)
    ]
    return df


def plot_speed(points: pd.DataFrame, bench: pd.DataFrame | None = None) -> Figure:
    """Speedup over dense against sequence length: rows = device, columns = kind of measurement."""
    bench = points if bench is None else bench
    devices = list(DEVICES) + sorted(set(points.get("device", pd.Series(dtype=str))) - set(DEVICES))
    kinds = list(KINDS) + sorted(set(points.get("kind", pd.Series(dtype=str))) - set(KINDS))
    fig, axes = plt.subplots(len(devices), len(kinds), figsize=(3.3 * len(kinds) + 1.8, 2.7 * len(devices)),
                             squeeze=False)
    hue_order = sorted(points["label"].unique()) if not points.empty else []
    palette = dict(zip(hue_order, sns.color_palette("tab10", max(10, len(hue_order))), strict=False))
    legend = None
    for r, device in enumerate(devices):
        on_device = points[points["device"] == device] if not points.empty else points
        names = sorted(bench.loc[bench["device"] == device, "device_name"].astype(str).unique()) \
            if not bench.empty else []
        for c, kind in enumerate(kinds):
            ax = axes[r][c]
            ax.set_title(f"{kind} — {', '.join(names) or device}", fontsize=8)
            if on_device.empty:
                absent = NO_GPU if device == "cuda" else f"not measured: no {device} rows in bench.csv"
                message_axis(ax, absent)
                continue
            cell = on_device[on_device["kind"] == kind]
            if cell.empty:
                message_axis(ax, f"not measured: no {kind} rows for {device}")
                continue
            sns.lineplot(data=cell, x="seq_len", y="speedup", hue="label", hue_order=hue_order,
                         palette=palette, style="batch", markers=True, dashes=False, ax=ax,
                         estimator="median", errorbar=None)
            _process_ranges(ax, cell, palette)
            ax.axhline(1.0, color="0.4", lw=0.8, ls=":")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sequence length")
            ax.set_ylabel("speedup vs dense (×)")
            if ax.get_legend() is not None:
                if legend is None:
                    legend = ax.get_legend_handles_labels()
                ax.get_legend().remove()
    if legend is not None:
        fig.legend(*legend, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    meta = ""
    if not bench.empty and {"torch", "threads"} <= set(bench.columns):
        meta = f" (torch {', '.join(sorted(bench['torch'].astype(str).unique()))}, " \
               f"threads {', '.join(sorted(bench['threads'].astype(str).unique()))})"
    fig.suptitle(f"measured tokens/s speedup over dense, same process{meta}{_processes_note(bench)}; "
                 "dotted: parity", fontsize=9)
    fig.tight_layout()
    return fig


def _timed_in_processes(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose speedup is a median over several fresh processes, with its range across them."""
    if not {"speedup_min", "speedup_max", "processes"} <= set(rows.columns):
        return rows.iloc[0:0]
    return rows[(rows["processes"] > 1) & rows["speedup_min"].notna() & rows["speedup_max"].notna()]


def _process_ranges(ax, cell: pd.DataFrame, palette: dict) -> None:
    """A vertical bar per point over the range of its speedup across processes (none for one process)."""
    ranged = _timed_in_processes(cell)
    for label, rows in ranged.groupby("label"):
        ax.vlines(rows["seq_len"], rows["speedup_min"], rows["speedup_max"], color=palette[label], lw=1.2,
                  alpha=0.6)


def _processes_note(bench: pd.DataFrame) -> str:
    """What the points and bars are when the benchmark ran in several processes."""
    ranged = _timed_in_processes(bench)
    if ranged.empty:
        return ""
    n = ", ".join(str(int(k)) for k in sorted(ranged["processes"].unique()))
    return f"; points: median over {n} processes, bars: their range"


def figure_speed(bench: pd.DataFrame) -> Figure:
    return plot_speed(speed_points(bench), bench)


# --- token depths (notebook explorer) ---


def depth_html(depths: pd.DataFrame, n_layers: int) -> str:
    """Tokens as coloured spans: darker = more blocks run; hover shows the count."""
    cmap = matplotlib.colormaps["Blues"]
    spans = []
    for tok, layers in zip(depths["token"], depths["layers"], strict=True):
        r, g, b, _ = cmap(0.15 + 0.8 * layers / max(1, n_layers))
        fg = "white" if layers / max(1, n_layers) > 0.6 else "black"
        spans.append(f'<span title="{layers} of {n_layers} blocks" style="background:rgb({r * 255:.0f},'
                     f'{g * 255:.0f},{b * 255:.0f});color:{fg};white-space:pre;padding:1px 0">'
                     f"{html.escape(tok)}</span>")
    return '<div style="font-family:monospace;line-height:1.9">' + "".join(spans) + "</div>"
