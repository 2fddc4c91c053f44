"""Figures of the paper: each one a compute step (DataFrames in, DataFrame/arrays out) and a pure plotting
function (data in, `matplotlib.figure.Figure` out), so a style change never re-runs a model.

    python -m sparsedepth.figures NAME --runs results/runs.csv --stats results/stats.csv \\
        --bench results/bench/bench.csv --runs-dir results/runs --out results/figures/NAME.pdf

writes NAME.pdf and NAME.png. NAME is one of `FIGURES`. A figure whose data is absent (no runs, no GPU
benchmark rows, no finished run directory) says so in the figure instead of inventing anything.
"""

from __future__ import annotations

import argparse
import html
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from .aggregate import arm_name
from .tables import BASELINE, TableError, arm_order, base_variant, ci_half_width, read_csv, require

EXIT_USER_ERROR = 2
EXIT_RUNTIME_ERROR = 1
KINDS = ("train_step", "prefill", "decode")
DEVICES = ("cpu", "cuda")
NO_GPU = "not measured: no GPU in this run"
RUN_SKIP_COLOURS = ("#e6e6e6", "#2b5d8a")  # skip, run


class FigureError(TableError):
    """Inputs a figure cannot be drawn from (wrong columns, unknown run); the message says which."""


# --- shared helpers ---


def arm_palette(arms: Sequence[str]) -> dict[str, tuple]:
    """One colour per trained variant (an arm's inference modes share it), stable across figures."""
    variants = list(dict.fromkeys(base_variant(a) for a in arm_order(arms)))
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
    """Write `out` as PDF and its `.png` sibling; creation dates left out so reruns are byte-stable."""
    pdf = Path(out).with_suffix(".pdf")
    png = pdf.with_suffix(".png")
    pdf.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None, "ModDate": None})
    fig.savefig(png, bbox_inches="tight", dpi=150)
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
                   title: str | None = None) -> Figure:
    """Facets (model × dataset); per arm mean ± CI over seeds; the Pareto front as a line."""
    if points.empty:
        return message_figure("no runs to plot: results/runs.csv is missing or empty", title)
    models = sorted(points["model"].unique())
    datasets = sorted(points["dataset"].unique())
    fig, axes = plt.subplots(len(models), len(datasets), figsize=(3.4 * len(datasets) + 1.6,
                             2.8 * len(models)), squeeze=False)
    palette = arm_palette(points["arm"])
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
            for arm in arm_order(cell["arm"]):
                p = cell[cell["arm"] == arm].iloc[0]
                h = ax.errorbar(p["x"], p["y"], xerr=np.nan_to_num(p["x_ci"]), yerr=np.nan_to_num(p["y_ci"]),
                                fmt=arm_marker(arm), color=palette[arm], ms=6, capsize=2, lw=1, zorder=2,
                                label=arm)
                handles.setdefault(arm, h)
            ax.xaxis.set_major_formatter(EngFormatter(places=1))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
    handles["Pareto front"] = plt.Line2D([], [], color="0.55", lw=1)
    order = [*arm_order([a for a in handles if a != "Pareto front"]), "Pareto front"]
    n_seeds = sorted(points["n_seeds"].unique())
    seeds = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}–{n_seeds[-1]}"
    fig.legend([handles[a] for a in order], order, loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8, title=f"arm (mean ± 95% CI,\n{seeds} seeds)", title_fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def figure_pareto(runs: pd.DataFrame) -> Figure:
    if runs.empty:
        return plot_cost_loss(pd.DataFrame(), "")
    return plot_cost_loss(arm_points(runs, "flops_per_token", "test_bpb"), "inference FLOPs / token",
                          "test bits per byte")


def figure_train_flops(runs: pd.DataFrame) -> Figure:
    if runs.empty:
        return plot_cost_loss(pd.DataFrame(), "")
    return plot_cost_loss(arm_points(runs, "train_flops", "test_bpb"), "training FLOPs spent (whole run)",
                          "test bits per byte")


# --- finished run directories ---


def find_runs(runs_dir: str | Path) -> pd.DataFrame:
    """Finished runs under `runs_dir` laid out as {model}/{variant}/{dataset}/seed{seed}/model.safetensors."""
    rows = []
    root = Path(runs_dir)
    for weights in sorted(root.glob("*/*/*/seed*/model.safetensors")) if root.is_dir() else []:
        run = weights.parent
        try:
            seed = int(run.name.removeprefix("seed"))
        except ValueError:
            continue
        rows.append({"model": run.parents[2].name, "variant": run.parents[1].name, "dataset": run.parent.name,
                     "seed": seed, "run_dir": str(run)})
    return pd.DataFrame(rows, columns=["model", "variant", "dataset", "seed", "run_dir"])


def pick_runs(found: pd.DataFrame, model: str | None = None, dataset: str | None = None,
              variants: Sequence[str] | None = None) -> tuple[str | None, str | None, dict[str, str]]:
    """One run per variant (lowest seed) in one (model, dataset) cell: the given one, else the cell with the
    most variants. Returns (model, dataset, {variant: run_dir})."""
    df = found
    if model is not None:
        df = df[df["model"] == model]
    if dataset is not None:
        df = df[df["dataset"] == dataset]
    if df.empty:
        return model, dataset, {}
    counts = df.groupby(["model", "dataset"])["variant"].nunique().reset_index()
    counts = counts.sort_values(["variant", "model", "dataset"], ascending=[False, True, True])
    model, dataset = counts.iloc[0]["model"], counts.iloc[0]["dataset"]
    cell = df[(df["model"] == model) & (df["dataset"] == dataset)].sort_values("seed")
    chosen = {v: g.iloc[0]["run_dir"] for v, g in cell.groupby("variant", sort=True)}
    if variants is not None:
        chosen = {v: chosen[v] for v in variants if v in chosen}
    return model, dataset, chosen


def _modes(model) -> list[str]:
    from .evaluate import inference_modes

    return inference_modes(model)


# --- layers per token ---


@torch.no_grad()
def layers_samples(run_dirs: dict[str, str | Path], max_batches: int = 4) -> pd.DataFrame:
    """Per-token layer counts on validation batches, for each run (variant) in every inference mode."""
    from .data import eval_batches
    from .evaluate import load_run, set_mode

    frames = []
    for variant, run_dir in run_dirs.items():
        model, cfg, data = load_run(run_dir)
        for mode in _modes(model):
            set_mode(model, mode)
            counts = [model(x).layers_per_token.flatten()
                      for x, _ in eval_batches(data.validation, cfg.batch_size, cfg.seq_len, max_batches)]
            layers = torch.cat(counts).round().long().numpy()
            frames.append(pd.DataFrame({"arm": arm_name(variant, mode), "router": cfg.router,
                                        "layers": layers, "n_layers": cfg.model.n_layers}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["arm", "router", "layers", "n_layers"])


def plot_layers_hist(samples: pd.DataFrame, title: str | None = None) -> Figure:
    if samples.empty:
        return message_figure("no finished run directory (model.safetensors) to measure layers per token",
                              title)
    n_layers = int(samples["n_layers"].max())
    arms = arm_order(samples["arm"])
    palette = arm_palette(arms)
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


def validation_window(data, length: int, start: int = 0) -> torch.Tensor:
    tokens = np.asarray(data.validation[start:start + length], dtype=np.int64)
    if len(tokens) < length:
        raise FigureError(f"validation split has {len(data.validation)} tokens; need {start + length}")
    return torch.from_numpy(tokens).unsqueeze(0)


@torch.no_grad()
def routing_maps(run_dirs: dict[str, str | Path], n_tokens: int = 48, start: int = 0) -> list[dict]:
    """For each run and inference mode: which block each token of one validation window ran.

    The model sees its training sequence length (so top-k routing chooses among the same number of tokens
    as in evaluation); the first `n_tokens` are shown."""
    from .evaluate import load_run, set_mode

    maps = []
    for variant, run_dir in run_dirs.items():
        model, cfg, data = load_run(run_dir)
        idx = validation_window(data, cfg.seq_len, start)
        shown = min(n_tokens, cfg.seq_len)
        tokens = [data.tokenizer.decode([int(i)]) for i in idx[0, :shown]]
        for mode in _modes(model):
            set_mode(model, mode)
            routing = model(idx).routing[0, :shown].numpy()  # [T, L]
            maps.append({"arm": arm_name(variant, mode), "router": cfg.router, "tokens": tokens,
                         "routing": routing, "routed_layers": list(model.router.routed_layers)})
    return maps


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


@torch.no_grad()
def attention_probs(model, idx: torch.Tensor, layer: int) -> dict:
    """Attention probabilities inside block `layer` for the one sequence `idx` ([1, T]).

    A forward hook on `model.blocks[layer].attn` sees its inputs (x, rope, positions, attn_mask, ...): the
    tokens the block gathered and their original positions. It recomputes q and k with the rotary
    embedding at those positions and the causal softmax, and checks the result against the block's own
    output (`max_abs_error`)."""
    if idx.dim() != 2 or idx.shape[0] != 1:
        raise FigureError("attention_probs takes a single sequence [1, T]")
    attn = model.blocks[layer].attn
    signature = inspect.signature(attn.forward)
    captured: dict = {}

    def hook(module, args, kwargs, output):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        x, rope, positions = bound.arguments["x"], bound.arguments["rope"], bound.arguments["positions"]
        mask = bound.arguments.get("attn_mask")
        B, T, C = x.shape
        H = module.n_heads
        q, k, v = module.qkv(x).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k = rope(q, positions), rope(k, positions)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(C // H)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        allowed = causal if mask is None else mask[:, None]
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)  # [B, H, T, T]
        y = module.out((probs @ v).transpose(1, 2).reshape(B, T, C))
        captured.update(probs=probs[0], positions=positions, error=(y - output).abs().max().item())

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    try:
        out = model(idx)
    finally:
        handle.remove()
    if not captured:
        raise FigureError(f"block {layer} ran on no token of this sequence")
    positions = captured["positions"]
    positions = positions[0] if positions.dim() == 2 else positions
    return {"probs": captured["probs"].numpy(), "positions": positions.numpy(),
            "ran": out.routing[0, :, layer].numpy(), "max_abs_error": captured["error"], "layer": layer}


def choose_layer(model, idx: torch.Tensor) -> int:
    """The routed block that skipped most tokens of this sequence while still running at least two."""
    with torch.no_grad():
        routing = model(idx).routing[0]  # [T, L]
    routed = [layer for layer in model.router.routed_layers if int(routing[:, layer].sum()) >= 2]
    if not routed:
        raise FigureError("no routed block runs two or more tokens of this sequence")
    return min(routed, key=lambda layer: (int(routing[:, layer].sum()), layer))


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


def attention_for_run(run_dir: str | Path, variant: str, n_tokens: int = 32, start: int = 0,
                      layer: int | None = None, mode: str = "causal") -> tuple[dict, list[str]]:
    from .evaluate import load_run, set_mode

    model, cfg, data = load_run(run_dir)
    set_mode(model, mode)
    n = min(n_tokens, cfg.model.max_seq_len)
    idx = validation_window(data, n, start)
    if not model.router.routed_layers:
        raise FigureError(f"variant {variant!r} (router {cfg.router}) routes no block; pick a routed variant")
    layer = choose_layer(model, idx) if layer is None else layer
    att = attention_probs(model, idx, layer)
    att["arm"] = arm_name(variant, mode)
    return att, [data.tokenizer.decode([int(i)]) for i in idx[0]]


# --- speed ---

BENCH_COLUMNS = ("device", "device_name", "kind", "impl", "router", "capacity", "batch", "seq_len", "speedup")


def speed_points(bench: pd.DataFrame) -> pd.DataFrame:
    """Routed rows of the benchmark with a display label (router, capacity when several, impl when not the
    gathered one); the dense rows are the reference (speedup 1) and are left out."""
    if bench.empty:
        return pd.DataFrame(columns=[*BENCH_COLUMNS, "label"])
    require(bench, BENCH_COLUMNS, "bench table")
    df = bench[bench["router"] != BASELINE].copy()
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
    fig.suptitle(f"measured tokens/s speedup over dense, same process{meta}; dotted: parity", fontsize=9)
    fig.tight_layout()
    return fig


def figure_speed(bench: pd.DataFrame) -> Figure:
    return plot_speed(speed_points(bench), bench)


# --- token depths (notebook explorer) ---


@torch.no_grad()
def token_depths(model, tokenizer, text: str) -> pd.DataFrame:
    """Each token of `text` (up to the model's context) with the number of blocks it ran."""
    ids = tokenizer.encode(text).ids[: model.cfg.max_seq_len]
    if not ids:
        return pd.DataFrame(columns=["position", "token", "layers"])
    out = model(torch.tensor([ids]))
    return pd.DataFrame({"position": range(len(ids)), "token": [tokenizer.decode([i]) for i in ids],
                         "layers": out.layers_per_token[0].round().long().tolist()})


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


# --- command line ---


def runs_in_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The run directories a runs table lists (one row per run), so a figure draws exactly the study's runs
    and never one left over from another grid under the same directory."""
    require(runs, ("model", "variant", "dataset", "seed", "run_dir"), "runs table")
    cols = ["model", "variant", "dataset", "seed", "run_dir"]
    return runs[cols].drop_duplicates("run_dir").reset_index(drop=True)


def _found(args) -> pd.DataFrame:
    """The runs of the given runs table; without one, every finished run under --runs-dir."""
    runs = read_csv(args.runs)
    return runs_in_table(runs) if not runs.empty else find_runs(args.runs_dir)


def _run_cell(args, variants: Sequence[str] | None = None):
    return pick_runs(_found(args), args.model, args.dataset, variants)


def _layers_hist(args) -> Figure:
    model, dataset, runs = _run_cell(args)
    return plot_layers_hist(layers_samples(runs, args.max_batches),
                            f"{model} / {dataset}, validation" if runs else None)


def _routing_map(args) -> Figure:
    wanted = args.variants.split(",")
    model, dataset, runs = _run_cell(args, wanted)
    missing = [v for v in wanted if v not in runs]
    if not runs:
        return message_figure(f"no finished run for {', '.join(wanted)} under {args.runs_dir}")
    return plot_routing_map(routing_maps(runs, args.tokens, args.start), missing,
                            f"{model} / {dataset}: routing on the start of the validation split "
                            "(* = routed block)")


def _attention(args) -> Figure:
    found = _found(args)
    candidates = [args.variant] if args.variant else ["mod", "probe", "threshold"]
    reasons = []
    for variant in candidates:
        model, dataset, runs = pick_runs(found, args.model, args.dataset, [variant])
        if not runs:
            reasons.append(f"{variant}: no finished run under {args.runs_dir}")
            continue
        try:
            att, tokens = attention_for_run(runs[variant], variant, args.tokens, args.start, args.layer,
                                            args.mode)
        except FigureError as e:  # e.g. a tiny model whose routed blocks gather < 2 of these tokens
            reasons.append(f"{variant}: {e}")
            continue
        return plot_attention(att, tokens, f"{model} / {dataset} / {att['arm']}: attention among the "
                              f"tokens block {att['layer']} gathered (validation text)")
    return message_figure("attention heatmap not drawn:\n" + "\n".join(reasons))


def _learning_curve(args) -> Figure:
    from .study.curves import figure_learning_curve

    return figure_learning_curve(read_csv(args.curves))


FIGURES: dict[str, Callable[[argparse.Namespace], Figure]] = {
    "pareto": lambda a: figure_pareto(read_csv(a.runs)),
    "train_flops": lambda a: figure_train_flops(read_csv(a.runs)),
    "layers_hist": _layers_hist,
    "routing_map": _routing_map,
    "speed": lambda a: figure_speed(read_csv(a.bench)),
    "attention": _attention,
    "learning_curve": _learning_curve,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsedepth.figures", description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=sorted(FIGURES))
    p.add_argument("--runs", help="(read only when given) tidy runs table")
    p.add_argument("--stats", help="(read only when given) paired statistics table")
    p.add_argument("--bench", help="(read only when given) benchmark table")
    p.add_argument("--curves", help="(read only when given) learning curves (sparsedepth.aggregate)")
    p.add_argument("--runs-dir", default="results/runs", help="run directories (for per-token figures)")
    p.add_argument("--out", required=True, help="output PDF; a PNG is written next to it")
    p.add_argument("--model", help="model of the run cell (default: the cell with most variants)")
    p.add_argument("--dataset", help="dataset of the run cell (default: the cell with most variants)")
    p.add_argument("--variants", default="probe,mod", help="routing_map: comma-separated variants")
    p.add_argument("--variant", help="attention: variant (default: mod, else seed)")
    p.add_argument("--mode", default="causal", help="attention: inference mode (causal|topk)")
    p.add_argument("--layer", type=int, help="attention: block (default: the most selective routed one)")
    p.add_argument("--tokens", type=int, default=48, help="routing_map/attention: tokens shown")
    p.add_argument("--start", type=int, default=0, help="offset of the text in the validation split")
    p.add_argument("--max-batches", type=int, default=4, help="layers_hist: validation batches per run")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    matplotlib.use("Agg")
    sns.set_theme(context="paper", style="whitegrid")
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError

    try:
        fig = FIGURES[args.name](args)
        pdf, png = save(fig, args.out)
    except (FigureError, ConfigError, CheckpointError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (RuntimeError, OSError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    print(f"wrote {pdf} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
