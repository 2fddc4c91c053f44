"""LaTeX tables and the paper's numbers, from the tidy results (never typed by hand).

    python -m sparsedepth.tables NAME --runs results/runs.csv --stats results/stats.csv \\
        --bench results/bench/bench.csv --out results/tables/NAME.tex

NAME is `main` (one row per model × dataset × arm), `bench` (batch × sequence length per router, the origin
project's table) or `numbers` (`\\newcommand` macros for every number the paper's text quotes). Each table
is computed as a numeric DataFrame first (`main_table`, `bench_table`, `numbers`) and formatted second
(pandas `Styler.to_latex` with booktabs rules), so the notebook can show the same numbers.
Missing inputs give a table or macro that says "not measured"/"n/a", never a made-up value.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from .atomic import write_text

EXIT_USER_ERROR = 2
BASELINE = "dense"
NA = r"\textit{n/a}"
NOT_MEASURED = r"\textit{not measured}"
ALPHA = 0.05

# Column names accepted from results/stats.csv (the first present wins), so the table does not break if
# sparsedepth.stats names its columns slightly differently.
STATS_ALIASES: dict[str, tuple[str, ...]] = {
    "diff": ("effect", "mean_diff", "diff", "delta", "mean_delta", "estimate"),
    "p_holm": ("p_holm", "p_t_holm", "p_holm_t", "holm_p", "p_adj", "p_adjusted"),
    "ci_low": ("ci_low", "ci_lo", "bca_low", "diff_ci_low"),
    "ci_high": ("ci_high", "ci_hi", "bca_high", "diff_ci_high"),
}


class TableError(ValueError):
    """Inputs a table or figure cannot be made from; the message says which."""


# --- reading the tidy results (shared with sparsedepth.figures) ---


def require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TableError(f"{what} lacks column(s) {', '.join(missing)} (see docs/CONTRACT.md)")


def read_csv(path: str | Path | None) -> pd.DataFrame:
    """A CSV, or an empty frame when the file is absent or empty (outputs then say the data is missing)."""
    if path is None or not Path(path).is_file():
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def ci_half_width(values: Sequence[float], level: float = 0.95) -> float:
    """Half-width of the Student-t confidence interval of the mean (NaN with fewer than two values)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return float("nan")
    return float(sps.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def base_variant(arm: str) -> str:
    """`mod[topk]` → `mod`: the variant an arm was trained as."""
    return arm.split("[", 1)[0]


def arm_order(arms: Sequence[str]) -> list[str]:
    """Baseline first, then alphabetical, each non-causal mode right after its causal arm."""
    return sorted(set(arms), key=lambda a: (a != BASELINE, base_variant(a), a))


# --- LaTeX text ---

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIALS))
_DIGITS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")
MACRO_NAME = re.compile(r"^[A-Za-z]+$")


def escape_latex(text: object) -> str:
    """Text safe in LaTeX's text mode (router names like `probe-frozen`, `dense_iso`, 50 %)."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIALS[m.group()], str(text))


def macro_name(*parts: object) -> str:
    """A TeX control-word name from free text: letters only, words capitalised, digits spelled out
    (`("best arm", "wikitext2")` → `BestArmWikitextTwo`)."""
    words = []
    for part in parts:
        for word in re.split(r"[^A-Za-z0-9]+", str(part)):
            for chunk in re.findall(r"[A-Za-z]+|[0-9]", word):
                words.append(_DIGITS[int(chunk)] if chunk.isdigit() else chunk[0].upper() + chunk[1:])
    name = "".join(words)
    if not MACRO_NAME.match(name):
        raise TableError(f"cannot make a macro name from {parts!r}")
    return name


def _finite(x) -> bool:
    return x is not None and isinstance(x, int | float | np.number) and math.isfinite(float(x))


def fmt_num(x, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if _finite(x) else NA


def fmt_signed(x, digits: int = 3) -> str:
    return f"${x:+.{digits}f}$" if _finite(x) else NA


def fmt_pm(mean, half, digits: int = 2) -> str:
    """`$m \\pm h$`; just `$m$` when there is no interval (one seed)."""
    if not _finite(mean):
        return NA
    if not _finite(half):
        return f"${mean:.{digits}f}$"
    return f"${mean:.{digits}f} \\pm {half:.{digits}f}$"


def fmt_p(p) -> str:
    if not _finite(p):
        return NA
    return "$<0.001$" if p < 0.001 else f"${p:.3f}$"


def p_clause(p) -> str:
    """`$p_{Holm} = 0.012$` for running text."""
    if not _finite(p):
        return "no test"
    return r"$p_{\mathrm{Holm}} < 0.001$" if p < 0.001 else f"$p_{{\\mathrm{{Holm}}}} = {p:.3f}$"


def fmt_sci(x) -> str:
    """Scientific notation for tiny magnitudes (causality probes): `$3.1\\times10^{-7}$`, exact zero as 0."""
    if not _finite(x):
        return NA
    if x == 0:
        return "$0$"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"${mantissa}\\times10^{{{int(exponent)}}}$"


def fmt_si(x, digits: int = 2) -> str:
    """Engineering notation with an SI prefix: 1.23\\,M."""
    if not _finite(x):
        return NA
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.{digits}f}\\,{prefix}"
    return f"{x:.{digits}f}"


def fmt_int(x) -> str:
    """An integer with thin-space thousands separators."""
    return f"{int(round(x)):,}".replace(",", r"\,") if _finite(x) else NA


def fmt_list(items: Sequence[object]) -> str:
    items = [escape_latex(i) for i in items]
    if not items:
        return NA
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def fmt_values(values: Sequence) -> str:
    """A single value, or the range min–max when runs disagree (e.g. steps per model)."""
    v = sorted({x for x in values if _finite(x)})
    if not v:
        return NA
    show = (lambda x: fmt_int(x)) if all(float(x).is_integer() for x in v) else (lambda x: f"{x:g}")
    return show(v[0]) if len(v) == 1 else f"{show(v[0])}--{show(v[-1])}"


# --- stats lookup ---


def stats_column(stats: pd.DataFrame, key: str) -> str | None:
    return next((c for c in STATS_ALIASES[key] if c in stats.columns), None)


def stats_rows(stats: pd.DataFrame, metric: str = "test_bpb") -> pd.DataFrame:
    """The stats rows of one metric, with canonical columns diff / p_holm / ci_low / ci_high."""
    cols = ["model", "dataset", "arm", "family", *STATS_ALIASES]
    if stats.empty or not {"model", "dataset", "arm"} <= set(stats.columns):
        return pd.DataFrame(columns=cols)
    df = stats[stats["metric"] == metric] if "metric" in stats.columns else stats
    if "reference" in df.columns:  # hypotheses table: the comparisons with the baseline (a best-of
        df = df[df["reference"] == BASELINE].drop_duplicates(["model", "dataset", "arm"])  # may repeat one)
    out = df[["model", "dataset", "arm"]].copy()
    out["family"] = df["family"].to_numpy() if "family" in df.columns else ""
    for key in STATS_ALIASES:
        col = stats_column(df, key)
        out[key] = df[col].astype(float) if col else np.nan
    return out.reset_index(drop=True)


def paired_delta(runs: pd.DataFrame, metric: str = "test_bpb") -> pd.DataFrame:
    """Mean over shared seeds of (arm − dense) per (model, dataset, arm): the fallback when stats.csv has
    no row for an arm (then no p-value is reported)."""
    rows = []
    for (model, dataset), cell in runs.groupby(["model", "dataset"]):
        base = cell[cell["arm"] == BASELINE].groupby("seed")[metric].mean()
        for arm, g in cell[cell["arm"] != BASELINE].groupby("arm"):
            paired = g.groupby("seed")[metric].mean().sub(base).dropna()
            rows.append({"model": model, "dataset": dataset, "arm": arm,
                         "diff": paired.mean() if len(paired) else np.nan, "n_pairs": len(paired)})
    return pd.DataFrame(rows, columns=["model", "dataset", "arm", "diff", "n_pairs"])


# --- main table ---

MAIN_COLUMNS = ("model", "dataset", "arm", "seed", "val_loss", "val_ppl", "test_bpb", "layers_per_token",
                "flops_per_token", "dense_flops_per_token", "train_flops", "steps", "train_tokens_per_s")


def main_table(runs: pd.DataFrame, stats: pd.DataFrame) -> pd.DataFrame:
    """Numbers of the main table, one row per (model, dataset, arm), baseline first in each cell: quality in
    test bits per byte at matched training compute, the paired difference from the hypotheses table."""
    require(runs, MAIN_COLUMNS, "runs table")
    st = stats_rows(stats).set_index(["model", "dataset", "arm"])
    fallback = paired_delta(runs).set_index(["model", "dataset", "arm"])
    rows = []
    for (model, dataset), cell in runs.groupby(["model", "dataset"], sort=True):
        dense = cell.loc[cell["arm"] == BASELINE, "flops_per_token"].mean()
        dense_train = cell.loc[cell["arm"] == BASELINE, "train_flops"].mean()
        for arm in arm_order(cell["arm"]):
            g = cell[cell["arm"] == arm]
            key = (model, dataset, arm)
            rel_to = dense if _finite(dense) else g["dense_flops_per_token"].mean()
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
            if arm != BASELINE:
                if key in st.index:
                    for col in ("diff", "ci_low", "ci_high", "p_holm", "family"):
                        row["delta" if col == "diff" else col] = st.loc[key, col]
                elif key in fallback.index:
                    row["delta"] = fallback.loc[key, "diff"]
            rows.append(row)
    return pd.DataFrame(rows)


LONG_TABLE_ROWS = 32  # more rows than this: a longtable that breaks across pages


def to_latex(disp: pd.DataFrame, keys: int, caption: str, label: str, rule_keys: int | None = None) -> str:
    """Booktabs table from cells that are already LaTeX (text escaped). The first `keys` columns name the
    row (e.g. model, dataset, arm): repeated leading key values are blanked and a `\\midrule` separates
    groups of the first `rule_keys` keys (default `keys - 1`). Long tables become a `longtable`."""
    rule_keys = keys - 1 if rule_keys is None else rule_keys
    body = disp.astype(str).copy()
    groups = [tuple(r) for r in disp.iloc[:, :rule_keys].itertuples(index=False)]
    for j in range(keys - 1):
        col = body.columns[j]
        prefix = [tuple(r) for r in disp.iloc[:, : j + 1].itertuples(index=False)]
        body[col] = ["" if i and prefix[i] == prefix[i - 1] else v for i, v in enumerate(body[col])]
    long = len(body) > LONG_TABLE_ROWS
    styler = body.style.hide(axis="index")
    tex = styler.to_latex(
        hrules=True, caption=caption, label=label, column_format="l" * keys + "r" * (body.shape[1] - keys),
        environment="longtable" if long else "table", position=None if long else "tbp",
        position_float=None if long else "centering",
    )
    lines = tex.splitlines()
    first = lines.index("\\midrule") + 1
    if long:  # the header Styler repeats on every page ends at \endhead; data starts after \endlastfoot
        first = next(i for i, line in enumerate(lines) if line.startswith("\\endlastfoot")) + 1
    out = lines[:first]
    for i, line in enumerate(lines[first:first + len(body)]):
        if i and rule_keys and groups[i] != groups[i - 1]:
            out.append("\\midrule")
        out.append(line)
    out += lines[first + len(body):]
    tex = "\n".join(out) + "\n"
    if not long:
        tex = tex.replace("\\centering\n", "\\centering\n\\small\n", 1)
    return tex


def format_main(table: pd.DataFrame) -> str:
    if table.empty:
        return empty_table("Test bits per byte, compute and quality difference per arm.", "tab:main",
                           "no runs: results/runs.csv is missing or empty")
    marks = {"primary": "$^{H}$", "exploratory": "$^{B}$"}
    disp = pd.DataFrame({
        "Test bits/byte": [fmt_pm(m, h, 3) for m, h in zip(table["test_bpb"], table["test_bpb_ci"],
                                                            strict=True)],
        r"$\Delta$ bits/byte [95\% CI]": [
            "--" if a == BASELINE else f"{fmt_signed(d, 4)} $[{lo:+.4f}, {hi:+.4f}]$" if _finite(lo) else
            fmt_signed(d, 4)
            for a, d, lo, hi in zip(table["arm"], table["delta"], table["ci_low"], table["ci_high"],
                                    strict=True)],
        r"$p_{\mathrm{adj}}$": ["--" if a == BASELINE else fmt_p(p) + marks.get(f, "")
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
    caption = (f"{where}Every arm at matched training compute: test bits per byte (mean $\\pm$ 95\\% "
               f"$t$-interval half-width over {seeds} seeds), the paired difference from dense with its "
               "95\\% CI and adjusted $p$-value from the hierarchical bootstrap over seeds and documents "
               "($^{H}$: a primary comparison, Holm; $^{B}$: exploratory, Benjamini--Hochberg), blocks run "
               "per token, inference FLOPs per token relative to dense, training steps, and the training "
               "FLOPs actually spent relative to dense (throughput: results/runs.csv). Arms written "
               "\\texttt{arm[topk]} use the non-causal top-$k$ rule at inference.")
    return to_latex(pd.concat([keys, disp], axis=1), keys.shape[1], caption, "tab:main")


def empty_table(caption: str, label: str, reason: str) -> str:
    return ("\\begin{table}[tbp]\n\\centering\n"
            f"\\caption{{{caption}}}\n\\label{{{label}}}\n"
            f"\\fbox{{\\parbox{{0.8\\linewidth}}{{\\centering\\emph{{{escape_latex(reason)}}}}}}}\n"
            "\\end{table}\n")


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
    df["_dense"] = df["router"] != BASELINE
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
        "Time (ms)": [f"{m:.2f} ({q:.2f})" if _finite(q) else fmt_num(m)
                      for m, q in zip(table["median_ms"], table["iqr_ms"], strict=True)],
        "Act. mem (MB)": [fmt_num(x, 1) for x in table["peak_activation_mb"]],
        "Layers/tok": [fmt_num(x) for x in table["layers_per_token"]],
        "Speedup": [fmt_num(x) for x in table["speedup"]],
        "Ideal": [fmt_num(x) for x in table["ideal_speedup"]],
        "Efficiency": [fmt_num(x) for x in table["efficiency"]],
    })
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
               f"brackets use a different implementation than per-sample gathering.{missing_gpu}")
    return to_latex(pd.concat([keys, disp], axis=1), keys.shape[1], caption, label, keys.shape[1] - 2)


# --- numbers for the text ---


def _best_routed(cell: pd.DataFrame) -> str | None:
    """The routed arm with the lowest mean validation loss in a (model, dataset) cell, among arms that infer
    causally (a non-causal top-k arm cannot generate text, so it is an upper bound, not a contender)."""
    causal = cell[(cell["router"] != BASELINE) & (cell["mode"] == "causal")]  # routers, not dense variants
    means = causal.groupby("arm")["val_loss"].mean().dropna()
    return None if means.empty else str(means.idxmin())


def _primary_cell(runs: pd.DataFrame) -> tuple[str, str] | None:
    if runs.empty:
        return None
    sizes = runs.groupby(["model", "dataset"]).size().reset_index(name="n")
    top = sizes.sort_values(["n", "model", "dataset"], ascending=[False, True, True]).iloc[0]
    return str(top["model"]), str(top["dataset"])


# Macros the paper may always use: defined on any results, `n/a` / `not measured` when the data is absent.
RUN_MACROS = (
    "NumRuns", "NumSeeds", "NumArms", "NumModels", "NumDatasets", "NumRouters", "DatasetNames", "ModelNames",
    "ArmNames", "TrainSteps", "SeqLen", "BatchSize", "NumLayers", "DModel", "Capacities", "ParamsM",
    "NumComparisons", "NumSignificant", "NumBetterThanDense", "BestArmSummary", "PrimaryModel",
    "PrimaryDataset", "BestArm", "BestDelta", "BestP", "BestRelFlops", "DensePpl", "ProbeDelta", "ProbeP",
    "ProbeLayers", "ProbeFrozenDelta", "ProbeFrozenP", "ProbeFrozenLayers", "ModDelta", "ModTopkDelta",
    "ModGap", "ModGapPairs", "MaxCausalViolation", "TopkCausalViolation", "MaxBatchLeak", "DenseBpb",
    "PlannedFlopsSpread", "SpentFlopsSpread",
)
BENCH_MACROS = (
    "DeviceName", "TargetRouter", "TargetBatch", "TargetSeqLen", "TargetCapacity", "TargetSpeedup",
    "TargetIdealSpeedup", "TargetEfficiency", "BestSpeedup", "BestSpeedupRouter", "OriginFlatSpeedup",
    "OriginGatherSpeedup", "OriginGridBatch", "OriginGridSeqLen",
)


def _run_numbers(runs: pd.DataFrame, stats: pd.DataFrame) -> dict[str, str]:
    require(runs, (*MAIN_COLUMNS, "mode", "router"), "runs table")
    m: dict[str, str] = {}
    n_runs = runs["run_dir"].nunique() if "run_dir" in runs else int((runs["mode"] == "causal").sum())
    m["NumRuns"] = str(n_runs)
    for key, col in (("NumSeeds", "seed"), ("NumArms", "arm"), ("NumModels", "model"),
                     ("NumDatasets", "dataset"), ("NumRouters", "router")):
        m[key] = str(runs[col].nunique())
    m["DatasetNames"] = fmt_list(sorted(runs["dataset"].unique()))
    m["ModelNames"] = fmt_list(sorted(runs["model"].unique()))
    m["ArmNames"] = fmt_list(arm_order(runs["arm"]))
    for key, col in (("TrainSteps", "steps"), ("SeqLen", "seq_len"), ("BatchSize", "batch_size"),
                     ("NumLayers", "n_layers"), ("DModel", "d_model")):
        if col in runs:
            m[key] = fmt_values(list(runs[col]))
    if "capacity" in runs:
        m["Capacities"] = fmt_values(list(runs.loc[runs["arm"] != BASELINE, "capacity"]))
    if "n_params" in runs:
        m["ParamsM"] = fmt_values([round(x / 1e6, 2) for x in runs["n_params"].dropna()])

    # quality: significance over the family, best routed arm per cell
    table = main_table(runs, stats)
    routed = table[table["arm"] != BASELINE]
    significant = routed[routed["p_holm"] < ALPHA]
    m["NumComparisons"] = str(int(routed["p_holm"].notna().sum()))
    m["NumSignificant"] = str(len(significant))
    m["NumBetterThanDense"] = str(int((significant["delta"] < 0).sum()))
    summary = []
    one_model = runs["model"].nunique() == 1
    for (model, dataset), cell in runs.groupby(["model", "dataset"], sort=True):
        best = _best_routed(cell)
        if best is None:
            continue
        row = table[(table["model"] == model) & (table["dataset"] == dataset) & (table["arm"] == best)]
        row = row.iloc[0]
        prefix = macro_name(model, dataset)
        m[f"BestArm{prefix}"] = escape_latex(best)
        m[f"BestDelta{prefix}"] = fmt_signed(row["delta"])
        m[f"BestP{prefix}"] = fmt_p(row["p_holm"])
        m[f"BestRelFlops{prefix}"] = fmt_num(row["flops_rel"])
        where = escape_latex(dataset if one_model else f"{model}/{dataset}")
        summary.append(f"on {where}, \\texttt{{{escape_latex(best)}}} ($\\Delta$ val loss "
                       f"{fmt_signed(row['delta'])}, {p_clause(row['p_holm'])}, "
                       f"{fmt_num(row['flops_rel'])}$\\times$ dense FLOPs)")
    if summary:
        m["BestArmSummary"] = "; ".join(summary)

    # the primary cell (most runs): the numbers the text discusses
    model, dataset = _primary_cell(runs)
    m["PrimaryModel"], m["PrimaryDataset"] = escape_latex(model), escape_latex(dataset)
    cell = table[(table["model"] == model) & (table["dataset"] == dataset)].set_index("arm")
    best = _best_routed(runs[(runs["model"] == model) & (runs["dataset"] == dataset)])
    if best is not None:
        m["BestArm"] = escape_latex(best)
        m["BestDelta"] = fmt_signed(cell.loc[best, "delta"])
        m["BestP"] = fmt_p(cell.loc[best, "p_holm"])
        m["BestRelFlops"] = fmt_num(cell.loc[best, "flops_rel"])
    if BASELINE in cell.index:
        m["DensePpl"] = fmt_pm(cell.loc[BASELINE, "val_ppl"], cell.loc[BASELINE, "val_ppl_ci"])
        m["DenseBpb"] = fmt_pm(cell.loc[BASELINE, "test_bpb"], cell.loc[BASELINE, "test_bpb_ci"], 3)
    # compute matching: largest deviation of any run's training FLOPs from its cell's dense mean
    spreads = {}
    for col in ("planned_train_flops", "train_flops"):
        if col in runs and runs[col].notna().any():
            dense_mean = runs[runs["arm"] == BASELINE].groupby(["model", "dataset"])[col].mean()
            ref = runs.set_index(["model", "dataset"]).index.map(dense_mean.get)
            spreads[col] = float(np.nanmax(np.abs(runs[col].to_numpy(float) / np.asarray(ref, float) - 1)))
    if "planned_train_flops" in spreads:
        m["PlannedFlopsSpread"] = f"{100 * spreads['planned_train_flops']:.1f}\\,\\%"
    if "train_flops" in spreads:
        m["SpentFlopsSpread"] = f"{100 * spreads['train_flops']:.1f}\\,\\%"
    for prefix, arm in (("Probe", "probe"), ("ProbeFrozen", "probe-frozen"), ("Mod", "mod"),
                        ("ModTopk", "mod[topk]")):
        if arm in cell.index:
            m[f"{prefix}Delta"] = fmt_signed(cell.loc[arm, "delta"])
            m[f"{prefix}P"] = fmt_p(cell.loc[arm, "p_holm"])
            m[f"{prefix}Layers"] = fmt_num(cell.loc[arm, "layers_per_token"])

    # MoD: what the causal inference rule costs against non-causal top-k (paired by seed, every cell)
    gaps = []
    for _, c in runs.groupby(["model", "dataset"]):
        for variant in sorted({base_variant(a) for a in c["arm"] if a.endswith("[topk]")}):
            causal = c[c["arm"] == variant].groupby("seed")["test_bpb"].mean()
            topk = c[c["arm"] == f"{variant}[topk]"].groupby("seed")["test_bpb"].mean()
            gaps.extend((causal - topk).dropna().tolist())
    if gaps:
        m["ModGap"], m["ModGapPairs"] = fmt_signed(float(np.mean(gaps))), str(len(gaps))

    # causality and batch-independence probes (largest logit change; 0 = exact)
    topk = runs["arm"].str.endswith("[topk]")
    if "causality_violation" in runs:
        if (~topk).any():
            m["MaxCausalViolation"] = fmt_sci(runs.loc[~topk, "causality_violation"].max())
        if topk.any():
            m["TopkCausalViolation"] = fmt_sci(runs.loc[topk, "causality_violation"].max())
    if "batch_leak" in runs:
        m["MaxBatchLeak"] = fmt_sci(runs["batch_leak"].max())
    return m


def _bench_numbers(bench: pd.DataFrame, device: str, kind: str, router: str | None) -> dict[str, str]:
    """The headline point on `device`: largest batch and sequence length measured for `kind`, gathered
    implementation, the given router (default: the probe router, else the first routed one)."""
    on = bench[bench["device"] == device]
    m: dict[str, str] = {}
    if on.empty:
        return m
    m["DeviceName"] = fmt_list(sorted(on["device_name"].astype(str).unique()))
    routed = on[on["router"] != BASELINE]
    if not routed.empty:
        top = routed.loc[routed["speedup"].idxmax()]
        m["BestSpeedup"] = fmt_num(top["speedup"])
        label = top["router"] if top["impl"] == "gather" else f"{top['router']} [{top['impl']}]"
        m["BestSpeedupRouter"] = escape_latex(label)
    df = routed[(routed["kind"] == kind) & (routed["impl"] == "gather")]
    if df.empty:
        return m
    routers = sorted(df["router"].unique())
    router = router if router in routers else ("probe" if "probe" in routers else routers[0])
    df = df[df["router"] == router]
    df = df[df["batch"] == df["batch"].max()]
    t = df[df["seq_len"] == df["seq_len"].max()].sort_values("capacity").iloc[0]
    m.update(TargetRouter=escape_latex(t["router"]), TargetBatch=fmt_int(t["batch"]),
             TargetSeqLen=fmt_int(t["seq_len"]), TargetCapacity=f"{t['capacity']:g}",
             TargetSpeedup=fmt_num(t["speedup"]), TargetIdealSpeedup=fmt_num(t["ideal_speedup"]),
             TargetEfficiency=fmt_num(t["efficiency"]))
    return m


def _origin_grid_numbers(bench: pd.DataFrame, device: str, kind: str) -> dict[str, str]:
    """The origin project's grid at its largest point: its flattened batch and our gather, vs dense."""
    on = bench[(bench["device"] == device) & (bench["kind"] == kind)]
    if on.empty:
        return {}
    on = on[on["batch"] == on["batch"].max()]
    on = on[on["seq_len"] == on["seq_len"].max()]
    m = {"OriginGridBatch": fmt_int(on["batch"].iloc[0]), "OriginGridSeqLen": fmt_int(on["seq_len"].iloc[0])}
    for impl, key in (("origin-flat", "OriginFlatSpeedup"), ("gather", "OriginGatherSpeedup")):
        rows = on[(on["impl"] == impl) & (on["router"] != BASELINE)]
        if not rows.empty:
            m[key] = fmt_num(rows["speedup"].median())
    return m


def numbers(runs: pd.DataFrame, stats: pd.DataFrame, bench: pd.DataFrame, kind: str = "prefill",
            router: str | None = None) -> dict[str, str]:
    """Every number the paper's text quotes, as LaTeX-ready strings keyed by macro name (letters only).

    The names in RUN_MACROS and `Cpu`/`Gpu` + BENCH_MACROS are always defined (`n/a` / `not measured`
    when the data is absent), so the paper compiles on any results; per-cell names
    (`BestArm<Model><Dataset>`, ...) are added for each cell that has runs."""
    from .study.report import hypothesis_numbers  # the study imports this module's formatting

    m = dict.fromkeys(RUN_MACROS, NA)
    if not runs.empty:
        m.update(_run_numbers(runs, stats))
    m.update(hypothesis_numbers(stats))
    if not bench.empty:
        require(bench, BENCH_TABLE_COLUMNS, "bench table")
    for device, prefix in (("cpu", "Cpu"), ("cuda", "Gpu")):
        found = {}
        if not bench.empty:
            found = {**_bench_numbers(on_grid(bench, "main"), device, kind, router),
                     **_origin_grid_numbers(on_grid(bench, "origin"), device, kind)}
        m.update({prefix + k: found.get(k, NOT_MEASURED) for k in BENCH_MACROS})
    m["BenchKind"] = escape_latex(kind)
    for key, col in (("BenchThreads", "threads"), ("TorchVersion", "torch")):
        m[key] = fmt_list(sorted(bench[col].astype(str).unique())) if col in bench else NA
    bad = [k for k in m if not MACRO_NAME.match(k)]
    if bad:
        raise TableError(f"invalid macro names: {bad}")
    return m


def format_numbers(values: dict[str, str]) -> str:
    lines = ["% Generated by `python -m sparsedepth.tables numbers`: every number the paper's text quotes.",
             "% Do not edit; re-run the workflow's tables rule."]
    lines += [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in sorted(values.items())]
    return "\n".join(lines) + "\n"


# --- command line ---


def _main(a) -> str:
    runs = read_csv(a.runs)
    return format_main(main_table(runs, read_csv(a.stats)) if not runs.empty else pd.DataFrame())


def on_grid(bench: pd.DataFrame, grid: str) -> pd.DataFrame:
    """Rows of one benchmark grid (`main`: the configured model; `origin`: the origin project's own grid)."""
    return bench[bench["grid"] == grid] if "grid" in bench and not bench.empty else bench


def _bench(a) -> str:
    bench = on_grid(read_csv(a.bench), a.grid)
    text = format_bench(bench_table(bench, a.kind), bench, a.kind)
    if a.grid == "main":
        return text
    origin_caption = "\\caption{The origin project's benchmark grid (its 6-block, $d=64$ model). Measured"
    return text.replace("{tab:bench}", "{tab:bench-origin}").replace("\\caption{Measured", origin_caption)


def build_commit() -> str:
    """The git commit the paper is built from (with `-dirty` when the tree has changes), or `unknown`."""
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _numbers(a) -> str:
    values = numbers(read_csv(a.runs), read_csv(a.stats), read_csv(a.bench), a.kind, a.router)
    curves = read_csv(a.curves)
    if not curves.empty:
        from .study.curves import last_drop

        drop = last_drop(curves)
        values["DenseLastDrop"] = f"{100 * drop:.1f}\\,\\%" if math.isfinite(drop) else NA
    values.setdefault("DenseLastDrop", NA)
    values["BuildCommit"] = escape_latex(build_commit())
    values["StudyName"] = escape_latex(a.study or "unnamed")
    return format_numbers(values)


def _hypotheses(a) -> str:
    from .study.report import format_hypotheses

    return format_hypotheses(read_csv(a.stats))


def _equal_steps(a) -> str:
    from .study.curves import equal_steps, format_equal_steps

    curves = read_csv(a.curves)
    return format_equal_steps(equal_steps(curves) if not curves.empty else pd.DataFrame())


TABLES: dict[str, Callable[[argparse.Namespace], str]] = {
    "main": _main, "bench": _bench, "numbers": _numbers, "hypotheses": _hypotheses,
    "equal_steps": _equal_steps,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsedepth.tables", description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=sorted(TABLES))
    p.add_argument("--runs", help="(read only when given) tidy runs table")
    p.add_argument("--stats", help="(read only when given) paired statistics table")
    p.add_argument("--bench", help="(read only when given) benchmark table")
    p.add_argument("--curves", help="(read only when given) learning curves (equal_steps)")
    p.add_argument("--out", required=True, help="output .tex file")
    p.add_argument("--kind", default="prefill", help="bench/numbers: kind of measurement (train_step|prefill|"
                   "decode)")
    p.add_argument("--router", help="numbers: router of the headline benchmark point (default: seed)")
    p.add_argument("--study", help="numbers: the grid's name, printed on the paper with the commit")
    p.add_argument("--grid", default="main", choices=["main", "origin"], help="bench: which benchmark grid")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        text = TABLES[args.name](args)
    except (TableError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    out = write_text(text, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
