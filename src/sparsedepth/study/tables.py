"""LaTeX tables of the study, from the tidy results (never typed by hand).

    python -m sparsedepth.study.tables NAME --runs results/runs.csv --stats results/stats.csv \\
        --bench results/bench/bench.csv --baseline dense --out results/tables/NAME.tex

NAME is `main` (one row per model × dataset × arm), `bench` (batch × sequence length per router, the origin
project's table), `speculative` (self-speculative decoding, `study.speculative`), `hypotheses`, `equal_steps`,
`frontier` (the isoFLOP frontier, `study.frontier_report`) or `numbers` (the paper's macros, `study.numbers`).
Each table is a numeric DataFrame first (`main_table`, `bench_table`) and LaTeX second (`study.latex`), so the
notebook can show the same numbers. A command reads only the files it is given (the rule's inputs), and a
named file that is missing or holds a diverged run is an error (`study.results`), never a quiet gap.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from ..atomic import write_text
from .latex import (
    LatexError,
    empty_table,
    escape_latex,
    finite,
    fmt_int,
    fmt_list,
    fmt_num,
    fmt_p,
    fmt_pm,
    fmt_signed,
    fmt_values,
    to_latex,
)
from .results import DENSE_ROUTER, ResultsError, add_result_args, arm_order, ci_half_width, load, require

EXIT_USER_ERROR = 2
ALPHA = 0.05

# Column names accepted from results/stats.csv (the first present wins), so the table does not break if
# the stats step names its columns slightly differently.
STATS_ALIASES: dict[str, tuple[str, ...]] = {
    "diff": ("effect", "mean_diff", "diff", "delta", "mean_delta", "estimate"),
    "p_holm": ("p_holm", "p_t_holm", "p_holm_t", "holm_p", "p_adj", "p_adjusted"),
    "ci_low": ("ci_low", "ci_lo", "bca_low", "diff_ci_low"),
    "ci_high": ("ci_high", "ci_hi", "bca_high", "diff_ci_high"),
}


# --- stats lookup ---


def stats_column(stats: pd.DataFrame, key: str) -> str | None:
    return next((c for c in STATS_ALIASES[key] if c in stats.columns), None)


def stats_rows(stats: pd.DataFrame, baseline: str, metric: str = "test_bpb") -> pd.DataFrame:
    """The stats rows of one metric, with canonical columns diff / p_holm / ci_low / ci_high."""
    cols = ["model", "dataset", "arm", "family", *STATS_ALIASES]
    if stats.empty or not {"model", "dataset", "arm"} <= set(stats.columns):
        return pd.DataFrame(columns=cols)
    df = stats[stats["metric"] == metric] if "metric" in stats.columns else stats
    if "reference" in df.columns:  # hypotheses table: the comparisons with the baseline (a best-of
        df = df[df["reference"] == baseline].drop_duplicates(["model", "dataset", "arm"])  # may repeat one)
    out = df[["model", "dataset", "arm"]].copy()
    out["family"] = df["family"].to_numpy() if "family" in df.columns else ""
    for key in STATS_ALIASES:
        col = stats_column(df, key)
        out[key] = df[col].astype(float) if col else np.nan
    return out.reset_index(drop=True)


def paired_delta(runs: pd.DataFrame, baseline: str, metric: str = "test_bpb") -> pd.DataFrame:
    """Mean over shared seeds of (arm − dense) per (model, dataset, arm): the fallback when stats.csv has
    no row for an arm (then no p-value is reported)."""
    rows = []
    for (model, dataset), cell in runs.groupby(["model", "dataset"]):
        base = cell[cell["arm"] == baseline].groupby("seed")[metric].mean()
        for arm, g in cell[cell["arm"] != baseline].groupby("arm"):
            paired = g.groupby("seed")[metric].mean().sub(base).dropna()
            rows.append({"model": model, "dataset": dataset, "arm": arm,
                         "diff": paired.mean() if len(paired) else np.nan, "n_pairs": len(paired)})
    return pd.DataFrame(rows, columns=["model", "dataset", "arm", "diff", "n_pairs"])


# --- main table ---

MAIN_COLUMNS = ("model", "dataset", "arm", "seed", "val_loss", "val_ppl", "test_bpb", "layers_per_token",
                "flops_per_token", "dense_flops_per_token", "train_flops", "steps", "train_tokens_per_s")


def main_table(runs: pd.DataFrame, stats: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Numbers of the main table, one row per (model, dataset, arm), baseline first in each cell: quality in
    test bits per byte at matched training compute, the paired difference from the hypotheses table."""
    require(runs, MAIN_COLUMNS, "runs table")
    st = stats_rows(stats, baseline).set_index(["model", "dataset", "arm"])
    fallback = paired_delta(runs, baseline).set_index(["model", "dataset", "arm"])
    rows = []
    for (model, dataset), cell in runs.groupby(["model", "dataset"], sort=True):
        dense = cell.loc[cell["arm"] == baseline, "flops_per_token"].mean()
        dense_train = cell.loc[cell["arm"] == baseline, "train_flops"].mean()
        for arm in arm_order(cell["arm"], baseline):
            g = cell[cell["arm"] == arm]
            key = (model, dataset, arm)
            rel_to = dense if finite(dense) else g["dense_flops_per_token"].mean()
            row = {
                "model": model, "dataset": dataset, "arm": arm, "n_seeds": g["seed"].nunique(),
                "test_bpb": g["test_bpb"].mean(), "test_bpb_ci": ci_half_width(g["test_bpb"]),
                "val_ppl": g["val_ppl"].mean(), "val_ppl_ci": ci_half_width(g["val_ppl"]),
                "val_loss": g["val_loss"].mean(), "layers_per_token": g["layers_per_token"].mean(),
                "flops_per_token": g["flops_per_token"].mean(),
                "flops_rel": g["flops_per_token"].mean() / rel_to,
                "steps": g["steps"].mean(), "train_flops_rel": g["train_flops"].mean() / dense_train,
                "train_tokens_per_s": g["train_tokens_per_s"].mean(),
                "delta": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_holm": np.nan, "family": "",
            }
            if arm != baseline:
                if key in st.index:
                    for col in ("diff", "ci_low", "ci_high", "p_holm", "family"):
                        row["delta" if col == "diff" else col] = st.loc[key, col]
                elif key in fallback.index:
                    row["delta"] = fallback.loc[key, "diff"]
            rows.append(row)
    return pd.DataFrame(rows)



def format_main(table: pd.DataFrame, baseline: str) -> str:
    if table.empty:
        return empty_table("Test bits per byte, compute and quality difference per arm.", "tab:main",
                           "no runs: results/runs.csv is missing or empty")
    marks = {"primary": "$^{H}$", "exploratory": "$^{B}$"}
    disp = pd.DataFrame({
        "Test bits/byte": [fmt_pm(m, h, 3) for m, h in zip(table["test_bpb"], table["test_bpb_ci"],
                                                            strict=True)],
        r"$\Delta$ bits/byte [95\% CI]": [
            "--" if a == baseline else f"{fmt_signed(d, 4)} $[{lo:+.4f}, {hi:+.4f}]$" if finite(lo) else
            fmt_signed(d, 4)
            for a, d, lo, hi in zip(table["arm"], table["delta"], table["ci_low"], table["ci_high"],
                                    strict=True)],
        r"$p_{\mathrm{adj}}$": ["--" if a == baseline else fmt_p(p) + marks.get(f, "")
                                for a, p, f in zip(table["arm"], table["p_holm"], table["family"],
                                                   strict=True)],
        "Blocks/tok": [fmt_num(x) for x in table["layers_per_token"]],
        "FLOPs/tok": [fmt_num(x) for x in table["flops_rel"]],
        "Steps": [fmt_int(x) for x in table["steps"]],
        "Train FLOPs": [fmt_num(x, 3) for x in table["train_flops_rel"]],
    })
    one_cell = table[["model", "dataset"]].drop_duplicates().shape[0] == 1
    names = (("Arm", "arm"),) if one_cell else (("Model", "model"), ("Dataset", "dataset"), ("Arm", "arm"))
    keys = pd.DataFrame({name: table[c].map(escape_latex).to_numpy() for name, c in names})
    seeds = fmt_values(table["n_seeds"])
    first = table.iloc[0]
    where = f"{escape_latex(first['model'])} on {escape_latex(first['dataset'])}. " if one_cell else ""
    base = f"\\texttt{{{escape_latex(baseline)}}}"
    caption = (f"{where}Every arm at matched training compute: test bits per byte (mean $\\pm$ 95\\% "
               f"$t$-interval half-width over {seeds} seeds), the paired difference from {base} with its "
               "95\\% CI and adjusted $p$-value from the hierarchical bootstrap over seeds and documents "
               "($^{H}$: a primary comparison, Holm; $^{B}$: exploratory, Benjamini--Hochberg), blocks run "
               f"per token, inference FLOPs per token relative to {base}, training steps, and the training "
               f"FLOPs actually spent relative to {base} (throughput: results/runs.csv). Arms written "
               "\\texttt{arm[topk]} use the non-causal top-$k$ rule at inference.")
    return to_latex(pd.concat([keys, disp], axis=1), keys.shape[1], caption, "tab:main")


# --- benchmark table ---

BENCH_TABLE_COLUMNS = ("device", "device_name", "kind", "impl", "router", "capacity", "batch", "seq_len",
                       "median_ms", "iqr_ms", "peak_activation_mb", "layers_per_token", "speedup",
                       "ideal_speedup", "efficiency")


def bench_table(bench: pd.DataFrame, kind: str = "prefill") -> pd.DataFrame:
    """One row per (device, router [impl], batch, seq_len) for one kind of measurement, dense first."""
    if bench.empty:
        return pd.DataFrame(columns=BENCH_TABLE_COLUMNS)
    require(bench, BENCH_TABLE_COLUMNS, "bench table")
    df = bench[bench["kind"] == kind].copy()
    df["label"] = [r if i == "gather" else f"{r} [{i}]"
                   for r, i in zip(df["router"], df["impl"], strict=True)]
    df["_dense"] = df["router"] != DENSE_ROUTER
    df["_other_impl"] = df["impl"] != "gather"
    df = df.sort_values(["device", "_dense", "router", "_other_impl", "impl", "capacity", "batch", "seq_len"])
    return df.drop(columns=["_dense", "_other_impl"]).reset_index(drop=True)


def format_bench(table: pd.DataFrame, bench: pd.DataFrame, kind: str = "prefill") -> str:
    label = "tab:bench"
    if table.empty:
        reason = "no benchmark rows" if bench.empty else f"no {kind} rows in the benchmark"
        return empty_table(f"Measured {escape_latex(kind)} cost per batch size and sequence length: "
                           "not measured.", label, reason)
    disp = pd.DataFrame({
        "Time (ms)": [f"{m:.2f} ({q:.2f})" if finite(q) else fmt_num(m)
                      for m, q in zip(table["median_ms"], table["iqr_ms"], strict=True)],
        "Act. mem (MB)": [fmt_num(x, 1) for x in table["peak_activation_mb"]],
        "Layers/tok": [fmt_num(x) for x in table["layers_per_token"]],
        "Speedup": [fmt_num(x) for x in table["speedup"]],
        "Ideal": [fmt_num(x) for x in table["ideal_speedup"]],
        "Efficiency": [fmt_num(x) for x in table["efficiency"]],
    })
    spread = ""
    if {"speedup_min", "speedup_max", "processes"} <= set(table.columns) and table["processes"].max() > 1:
        disp["Speedup"] = [f"{fmt_num(x)} [{fmt_num(lo)}--{fmt_num(hi)}]" if finite(lo) else fmt_num(x)
                           for x, lo, hi in zip(table["speedup"], table["speedup_min"], table["speedup_max"],
                                                strict=True)]
        n = fmt_int(table["processes"].max())
        spread = (f" Times and speedups are medians over {n} fresh processes, the speedup's range across "
                  "them in brackets.")
    if "ops_per_call" in table and table["ops_per_call"].notna().any():  # load-independent
        disp["Ops"] = [fmt_int(x) if finite(x) else "--" for x in table["ops_per_call"]]
        spread += " Ops: torch operations per call (independent of the machine's load)."
    mfu = ""
    if "mfu" in table and table["mfu"].notna().any():  # model FLOPs utilisation (bench.peak)
        disp["MFU (\\%)"] = [fmt_num(100 * x, 1) for x in table["mfu"]]
        sources = fmt_list(sorted(table["peak_source"].dropna().astype(str).unique()))
        mfu = (" MFU: model FLOP/s achieved (those of the tokens each block ran; a training step counts 3 "
               f"forward passes) over the device's peak ({escape_latex(sources)}).")
    keys = {"Router": table["label"].map(escape_latex), "Batch": table["batch"].map(fmt_int),
            "Seq.": table["seq_len"].map(fmt_int)}
    if table["device"].nunique() > 1:
        keys = {"Device": table["device"].map(escape_latex), **keys}
    keys = pd.DataFrame({k: v.to_numpy() for k, v in keys.items()})
    device_names = fmt_list(sorted(table["device_name"].astype(str).unique()))
    meta = ""
    if {"torch", "threads"} <= set(table.columns):
        meta = (f", PyTorch {fmt_list(sorted(table['torch'].astype(str).unique()))}, "
                f"{fmt_list(sorted(table['threads'].astype(str).unique()))} threads")
    missing_gpu = "" if "cuda" in set(bench["device"]) else " GPU: not measured (no GPU in this run)."
    caption = (f"Measured {escape_latex(kind)} cost on {device_names}{meta}: median time (IQR) over repeats, "
               "peak activation memory, blocks run per token, speedup over dense measured in the same "
               "process, "
               "ideal speedup (dense FLOPs / routed FLOPs) and efficiency = speedup / ideal. Routers in "
               "brackets use a different implementation than per-sample gathering."
               f"{spread}{mfu}{missing_gpu}")
    return to_latex(pd.concat([keys, disp], axis=1), keys.shape[1], caption, label, keys.shape[1] - 2)


# --- command line ---


def _main(a) -> str:
    runs = load(a.runs, "runs")
    table = main_table(runs, load(a.stats, "stats"), a.baseline) if not runs.empty else pd.DataFrame()
    return format_main(table, a.baseline)


def on_grid(bench: pd.DataFrame, grid: str) -> pd.DataFrame:
    """Rows of one benchmark grid (`main`: the configured model; `origin`: the origin project's own grid)."""
    return bench[bench["grid"] == grid] if "grid" in bench and not bench.empty else bench


def _bench(a) -> str:
    bench = on_grid(load(a.bench, "bench"), a.grid)
    text = format_bench(bench_table(bench, a.kind), bench, a.kind)
    if a.grid == "main":
        return text
    origin_caption = "\\caption{The origin project's benchmark grid (its 6-block, $d=64$ model). Measured"
    return text.replace("{tab:bench}", "{tab:bench-origin}").replace("\\caption{Measured", origin_caption)


def _numbers(a) -> str:
    from .numbers import format_numbers, paper_numbers
    from .results import read_csv

    values = paper_numbers(load(a.runs, "runs"), load(a.stats, "stats"), load(a.bench, "bench"),
                           load(a.curves, "curves"), baseline=a.baseline, study=a.study, kind=a.kind,
                           router=a.router, speculative=load(a.speculative, "speculative"),
                           frontier=read_csv(a.frontier))  # NaN there means "not bracketed"
    return format_numbers(values)


def _speculative(a) -> str:
    from .speculative import format_speculative, speculative_table

    return format_speculative(speculative_table(load(a.speculative, "speculative")))


def _hypotheses(a) -> str:
    from .report import format_hypotheses

    return format_hypotheses(load(a.stats, "stats"))


def _equal_steps(a) -> str:
    from .curves import equal_steps, format_equal_steps

    curves = load(a.curves, "curves")
    table = equal_steps(curves, a.baseline) if not curves.empty else pd.DataFrame()
    return format_equal_steps(table, a.baseline)


def _frontier(a) -> str:
    from .frontier_report import format_frontier
    from .results import read_csv

    return format_frontier(read_csv(a.frontier))


TABLES: dict[str, Callable[[argparse.Namespace], str]] = {
    "main": _main, "bench": _bench, "numbers": _numbers, "hypotheses": _hypotheses,
    "equal_steps": _equal_steps, "speculative": _speculative, "frontier": _frontier,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsedepth.study.tables",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=sorted(TABLES))
    add_result_args(p, {"runs": "tidy runs table", "stats": "hypotheses table", "bench": "benchmark table",
                        "curves": "learning curves (equal_steps, numbers)",
                        "speculative": "speculative-decoding benchmark (speculative, numbers)",
                        "frontier": "isoFLOP frontier (frontier; study.frontier --out)"},
                    "the arm every other arm is compared with")
    p.add_argument("--out", required=True, help="output .tex file")
    p.add_argument("--kind", default="prefill", help="bench/numbers: kind of measurement (train_step|prefill|"
                   "decode)")
    p.add_argument("--router", help="numbers: router of the headline benchmark point (default: probe)")
    p.add_argument("--study", help="numbers: the grid's name, printed on the paper with the commit")
    p.add_argument("--grid", default="main", choices=["main", "origin"], help="bench: which benchmark grid")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        text = TABLES[args.name](args)
    except (ResultsError, LatexError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    out = write_text(text, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
