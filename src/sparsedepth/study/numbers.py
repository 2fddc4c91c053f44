"""The paper's numbers: one `\\newcommand` macro for every number the text quotes (numbers.tex).

Why code, not prose: the abstract and results sections cite these macros, so rerunning the study rewrites
every number (and the seed count, arm names, commit and grid) in the text; a macro whose data is absent
reads `n/a` or `not measured`, so the paper compiles on any results.
"""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pandas as pd

from .decode import DECODE_MACROS, decode_numbers
from .latex import (
    MACRO_NAME,
    NA,
    NOT_MEASURED,
    LatexError,
    escape_latex,
    fmt_int,
    fmt_list,
    fmt_num,
    fmt_p,
    fmt_pm,
    fmt_sci,
    fmt_signed,
    fmt_values,
    macro_name,
    p_clause,
)
from .results import DENSE_ROUTER, arm_order, base_variant, require
from .tables import ALPHA, BENCH_TABLE_COLUMNS, MAIN_COLUMNS, main_table, on_grid


def _best_routed(cell: pd.DataFrame) -> str | None:
    """The routed arm with the lowest mean validation loss in a (model, dataset) cell, among arms that infer
    causally (a non-causal top-k arm cannot generate text, so it is an upper bound, not a contender)."""
    causal = cell[(cell["router"] != DENSE_ROUTER) & (cell["mode"] == "causal")]  # not dense variants
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
    "OriginGatherSpeedup", "OriginGridBatch", "OriginGridSeqLen", "TrainMemoryRatio", "TrainMemoryIdeal",
    "PrefillMemoryRatio", "PrefillMemoryIdeal", "CacheMemoryRatio", "CacheMemoryIdeal",
    "TrainTokensPerS", "TrainMfu", "TrainMfuDense", "TrainPrecision", "PeakTflops", "PeakSource",
    *DECODE_MACROS,
)


def _run_numbers(runs: pd.DataFrame, stats: pd.DataFrame, baseline: str) -> dict[str, str]:
    require(runs, (*MAIN_COLUMNS, "mode", "router"), "runs table")
    m: dict[str, str] = {}
    n_runs = runs["run_dir"].nunique() if "run_dir" in runs else int((runs["mode"] == "causal").sum())
    m["NumRuns"] = str(n_runs)
    for key, col in (("NumSeeds", "seed"), ("NumArms", "arm"), ("NumModels", "model"),
                     ("NumDatasets", "dataset"), ("NumRouters", "router")):
        m[key] = str(runs[col].nunique())
    m["DatasetNames"] = fmt_list(sorted(runs["dataset"].unique()))
    m["ModelNames"] = fmt_list(sorted(runs["model"].unique()))
    m["ArmNames"] = fmt_list(arm_order(runs["arm"], baseline))
    for key, col in (("TrainSteps", "steps"), ("SeqLen", "seq_len"), ("BatchSize", "batch_size"),
                     ("NumLayers", "n_layers"), ("DModel", "d_model")):
        if col in runs:
            m[key] = fmt_values(list(runs[col]))
    if "capacity" in runs:
        m["Capacities"] = fmt_values(list(runs.loc[runs["arm"] != baseline, "capacity"]))
    if "n_params" in runs:
        m["ParamsM"] = fmt_values([round(x / 1e6, 2) for x in runs["n_params"].dropna()])

    # quality: significance over the family, best routed arm per cell
    table = main_table(runs, stats, baseline)
    routed = table[table["arm"] != baseline]
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
    if baseline in cell.index:  # the macros keep their historical names; the values are the baseline's
        m["DensePpl"] = fmt_pm(cell.loc[baseline, "val_ppl"], cell.loc[baseline, "val_ppl_ci"])
        m["DenseBpb"] = fmt_pm(cell.loc[baseline, "test_bpb"], cell.loc[baseline, "test_bpb_ci"], 3)
    # compute matching: largest deviation of any run's training FLOPs from its cell's dense mean
    spreads = {}
    for col in ("planned_train_flops", "train_flops"):
        if col in runs and runs[col].notna().any():
            dense_mean = runs[runs["arm"] == baseline].groupby(["model", "dataset"])[col].mean()
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


def _headline(df: pd.DataFrame, router: str | None) -> pd.Series:
    """The row the paper quotes: the given router (default: the probe router, else the first routed one)
    at the largest batch, then the longest sequence, then the lowest capacity."""
    routers = sorted(df["router"].unique())
    df = df[df["router"] == (router if router in routers else "probe" if "probe" in routers else routers[0])]
    df = df[df["batch"] == df["batch"].max()]
    return df[df["seq_len"] == df["seq_len"].max()].sort_values("capacity").iloc[0]


def _bench_numbers(bench: pd.DataFrame, device: str, kind: str, router: str | None) -> dict[str, str]:
    """The headline point on `device`: largest batch and sequence length measured for `kind`, gathered
    implementation, the given router (default: the probe router, else the first routed one)."""
    on = bench[bench["device"] == device]
    m: dict[str, str] = {}
    if on.empty:
        return m
    m["DeviceName"] = fmt_list(sorted(on["device_name"].astype(str).unique()))
    routed = on[on["router"] != DENSE_ROUTER]
    if not routed.empty:
        top = routed.loc[routed["speedup"].idxmax()]
        m["BestSpeedup"] = fmt_num(top["speedup"])
        label = top["router"] if top["impl"] == "gather" else f"{top['router']} [{top['impl']}]"
        m["BestSpeedupRouter"] = escape_latex(label)
    df = routed[(routed["kind"] == kind) & (routed["impl"] == "gather")]
    if df.empty:
        return m
    t = _headline(df, router)
    m.update(TargetRouter=escape_latex(t["router"]), TargetBatch=fmt_int(t["batch"]),
             TargetSeqLen=fmt_int(t["seq_len"]), TargetCapacity=f"{t['capacity']:g}",
             TargetSpeedup=fmt_num(t["speedup"]), TargetIdealSpeedup=fmt_num(t["ideal_speedup"]),
             TargetEfficiency=fmt_num(t["efficiency"]))
    return m


# memory ratios to dense quoted by the paper: (macro prefix, benchmark kind)
MEMORY_KINDS = (("Train", "train_step"), ("Prefill", "prefill_cached"), ("Cache", "decode"))


def _memory_numbers(bench: pd.DataFrame, device: str, router: str | None) -> dict[str, str]:
    """Measured memory / dense's and its FLOP-style ideal at each kind's largest point, for the headline
    router: training activations, generation-style prefill (with its cache), and the decode KV cache."""
    m: dict[str, str] = {}
    if "memory_ratio" not in bench:
        return m
    on = bench[(bench["device"] == device) & (bench["impl"] == "gather") & (bench["router"] != DENSE_ROUTER)]
    for prefix, kind in MEMORY_KINDS:
        df = on[(on["kind"] == kind) & on["memory_ratio"].notna()]
        if df.empty:
            continue
        t = _headline(df, router)
        m[f"{prefix}MemoryRatio"] = fmt_num(t["memory_ratio"])
        m[f"{prefix}MemoryIdeal"] = fmt_num(t["ideal_memory_ratio"])
    return m


def _mfu_numbers(bench: pd.DataFrame, device: str, router: str | None) -> dict[str, str]:
    """Training speed at the train step's headline point: tokens/s and MFU (achieved model FLOP/s over the
    device's peak, `bench.peak`) of the headline router and of dense, the precision and the peak's source."""
    if "mfu" not in bench:
        return {}
    on = bench[(bench["device"] == device) & (bench["impl"] == "gather") & (bench["kind"] == "train_step")
               & bench["mfu"].notna()]
    routed = on[on["router"] != DENSE_ROUTER]
    if routed.empty:
        return {}
    t = _headline(routed, router)
    m = {"TrainTokensPerS": fmt_int(t["tokens_per_s"]), "TrainMfu": f"{100 * t['mfu']:.1f}\\,\\%",
         "TrainPrecision": escape_latex(str(t["precision"])), "PeakTflops": fmt_num(t["peak_tflops"]),
         "PeakSource": escape_latex(str(t["peak_source"]))}
    dense = on[(on["router"] == DENSE_ROUTER) & (on["batch"] == t["batch"]) & (on["seq_len"] == t["seq_len"])]
    if not dense.empty:
        m["TrainMfuDense"] = f"{100 * dense['mfu'].iloc[0]:.1f}\\,\\%"
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
        rows = on[(on["impl"] == impl) & (on["router"] != DENSE_ROUTER)]
        if not rows.empty:
            m[key] = fmt_num(rows["speedup"].median())
    return m


def numbers(runs: pd.DataFrame, stats: pd.DataFrame, bench: pd.DataFrame, *, baseline: str,
            kind: str = "prefill", router: str | None = None) -> dict[str, str]:
    """Every number the paper's text quotes, as LaTeX-ready strings keyed by macro name (letters only).

    The names in RUN_MACROS and `Cpu`/`Gpu` + BENCH_MACROS are always defined (`n/a` / `not measured`
    when the data is absent), so the paper compiles on any results; per-cell names
    (`BestArm<Model><Dataset>`, ...) are added for each cell that has runs."""
    from .report import hypothesis_numbers

    m = dict.fromkeys(RUN_MACROS, NA)
    if not runs.empty:
        m.update(_run_numbers(runs, stats, baseline))
    m.update(hypothesis_numbers(stats))
    if not bench.empty:
        require(bench, BENCH_TABLE_COLUMNS, "bench table")
    for device, prefix in (("cpu", "Cpu"), ("cuda", "Gpu")):
        found = {}
        if not bench.empty:
            found = {**_bench_numbers(on_grid(bench, "main"), device, kind, router),
                     **_memory_numbers(on_grid(bench, "main"), device, router),
                     **_mfu_numbers(on_grid(bench, "main"), device, router),
                     **decode_numbers(on_grid(bench, "main"), device),
                     **_origin_grid_numbers(on_grid(bench, "origin"), device, kind)}
        m.update({prefix + k: found.get(k, NOT_MEASURED) for k in BENCH_MACROS})
    m["BenchKind"] = escape_latex(kind)
    for key, col in (("BenchThreads", "threads"), ("TorchVersion", "torch")):
        m[key] = fmt_list(sorted(bench[col].astype(str).unique())) if col in bench else NA
    bad = [k for k in m if not MACRO_NAME.match(k)]
    if bad:
        raise LatexError(f"invalid macro names: {bad}")
    return m


def paper_numbers(runs: pd.DataFrame, stats: pd.DataFrame, bench: pd.DataFrame, curves: pd.DataFrame, *,
                  baseline: str, study: str | None, kind: str = "prefill", router: str | None = None,
                  speculative: pd.DataFrame | None = None,
                  frontier: pd.DataFrame | None = None) -> dict[str, str]:
    """`numbers` plus what only the paper prints: the baseline's last loss drop, the commit, the grid, the
    speculative-decoding benchmark (`Cpu`/`Gpu` + `study.speculative.SPEC_MACROS`) and the isoFLOP
    frontier with its sweep (`study.frontier_report`, `study.sweep_report`)."""
    from .curves import last_drop
    from .frontier_report import frontier_numbers
    from .speculative import speculative_numbers
    from .sweep_report import sweep_numbers

    frontier = pd.DataFrame() if frontier is None else frontier
    values = numbers(runs, stats, bench, baseline=baseline, kind=kind, router=router)
    values.update(speculative_numbers(pd.DataFrame() if speculative is None else speculative))
    values.update(frontier_numbers(frontier))
    values.update(sweep_numbers(runs, frontier))
    drop = last_drop(curves, baseline) if not curves.empty else math.nan
    values["DenseLastDrop"] = f"{100 * drop:.1f}\\,\\%" if math.isfinite(drop) else NA
    values["BaselineArm"] = escape_latex(baseline)
    values["BuildCommit"] = escape_latex(build_commit())
    values["StudyName"] = escape_latex(study or "unnamed")
    return values


def format_numbers(values: dict[str, str]) -> str:
    lines = ["% Generated by `python -m sparsedepth.study.tables numbers`: every number the paper quotes.",
             "% Do not edit; re-run the workflow's tables rule."]
    lines += [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in sorted(values.items())]
    return "\n".join(lines) + "\n"


def build_commit() -> str:
    """The git commit the paper is built from (with `-dirty` when the tree has changes), or `unknown`."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"

