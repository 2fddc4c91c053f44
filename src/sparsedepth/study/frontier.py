"""The isoFLOP frontier of every arm, per training budget, and each arm's frontier against the reference's.

    python -m sparsedepth.study.frontier --runs results/runs.csv --units RUN_DIR/units.csv ... \\
        --sweep '{"C1-d64": {"budget": "C1", "budget_flops": 4e11, "size": "d64"}, ...}' \\
        --reference dense --arms mod,probe,threshold --dataset enwik8 --split test \\
        --profiles-out results/isoflop.csv --out results/frontier.csv

Why: at a fixed training budget a routed arm may want a different model size than dense, so comparing arms
at one size confounds routing with size. Mixture-of-Depths and Chinchilla compare the *frontier*: the best
bpb over sizes at each budget (`study.isoflop`: parabola in log N, bracketing check, paired seed × document
bootstrap with refits). Family: the comparisons frontier(arm) − frontier(reference) on `--dataset`, every
listed arm × every budget, are the primaries (Holm over all of them together; a comparison that is not
bracketed stays in the family with p = 1 and reports no number). Other datasets are exploratory
(Benjamini–Hochberg among themselves). Unit of analysis: the training seed (shared by every arm and size
of a budget) crossed with the test document.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import write_csv
from . import isoflop
from .hierarchical import verdict as test_verdict
from .hypotheses import load_units, unit_kind
from .results import load
from .stats import holm
from .sweeps import budget_part

EXIT_USER_ERROR = 2
ALPHA = 0.05
NOT_BRACKETED = "not bracketed"
PROFILE_COLUMNS = [
    "dataset", "budget", "budget_flops", "arm", "size", "model", "n_params", "bpb", "bpb_sd", "bpb_min",
    "bpb_max", "n_seeds", "tokens_per_param", "split", "unit",
]
FRONTIER_COLUMNS = [
    "dataset", "budget", "budget_flops", "arm", "reference", "family", "split", "unit", "n_sizes", "n_seeds",
    "n_units", "bracketed", "bracket_reason", "share_bracketed", "fit_a", "fit_b", "fit_c", "frontier_bpb",
    "frontier_ci_low", "frontier_ci_high", "frontier_se", "n_star", "n_star_ci_low", "n_star_ci_high",
    "best_size", "best_bpb", "effect", "ci_low", "ci_high", "se", "df", "p", "p_adj", "correction",
    "rel_effect", "mde", "rel_mde", "n_star_ratio", "n_star_ratio_ci_low", "n_star_ratio_ci_high", "verdict",
    "method",
]


class FrontierError(ValueError):
    """Inputs the frontier cannot be estimated from; the message names the file, key or run."""


def read_sweep(text: str) -> dict[str, dict]:
    """The model → {budget, budget_flops, size} map, from JSON text or a JSON file."""
    source = "--sweep"
    if not text.lstrip().startswith("{"):
        if not Path(text).is_file():
            raise FrontierError(f"--sweep {text}: not found (give JSON text or a JSON file)")
        source, text = text, Path(text).read_text()
    try:
        sweep = json.loads(text)
    except json.JSONDecodeError as e:
        raise FrontierError(f"{source}: not JSON: {e}") from None
    if not isinstance(sweep, dict) or not sweep:
        raise FrontierError(f"{source}: expected a non-empty object model -> {{budget, budget_flops, size}}")
    for model, entry in sweep.items():
        missing = {"budget", "budget_flops", "size"} - set(entry if isinstance(entry, dict) else {})
        if missing:
            raise FrontierError(f"{source}: {model} lacks {', '.join(sorted(missing))}")
        flops = entry["budget_flops"]
        if not isinstance(flops, int | float) or not np.isfinite(flops) or flops <= 0:
            raise FrontierError(f"{source}: {model}.budget_flops = {flops!r} is not a positive number")
    return sweep


def _budget_arrays(units: pd.DataFrame, runs: pd.DataFrame, windows: list[list[str]], arms: list[str],
                   kind: str, where: str):
    """nats [A, K, S, U] on the seeds every (arm, size) shares, bytes [U], log10 params [A, K], seeds;
    arm a's K sizes are `windows[a]` (its own window, smallest first)."""
    nats = units.groupby(["arm", "model", "seed", kind])["nats"].sum().unstack(kind)
    byte_rows = units.groupby(["arm", "model", "seed", kind])["bytes"].sum().unstack(kind)
    if nats.isna().any().any():
        raise FrontierError(f"{where}: the runs were not scored on the same {kind}s")
    if not (byte_rows.nunique(axis=0) == 1).all():
        raise FrontierError(f"{where}: runs disagree on the bytes of a {kind}")
    seeds = None
    for arm, models in zip(arms, windows, strict=True):
        for model in models:
            if (arm, model) not in nats.index.droplevel("seed"):
                raise FrontierError(f"{where}: arm {arm} has no scored run of model {model}")
            have = set(nats.loc[(arm, model)].index)
            seeds = have if seeds is None else seeds & have
    if not seeds:
        raise FrontierError(f"{where}: no seed is shared by every arm and size")
    seeds = sorted(seeds)
    array = np.stack([np.stack([nats.loc[(arm, model)].loc[seeds].to_numpy(float) for model in models])
                      for arm, models in zip(arms, windows, strict=True)])
    params = runs.groupby(["arm", "model"])["n_params"].mean()
    log_n = np.log10([[params[(arm, model)] for model in models] for arm, models in zip(arms, windows,
                                                                                          strict=True)])
    return array, byte_rows.iloc[0].to_numpy(float), log_n, seeds


def _tokens_per_param(runs: pd.DataFrame) -> pd.Series:
    if not {"steps", "batch_size", "seq_len"} <= set(runs.columns):
        return pd.Series(dtype=float)
    tokens = runs["steps"] * runs["batch_size"] * runs["seq_len"] / runs["n_params"]
    return tokens.groupby([runs["arm"], runs["model"]]).mean()


def _no_number(_) -> float:
    return np.nan


def _windows(runs: pd.DataFrame, arms: list[str], where: str) -> list[list[str]]:
    """Each arm's sizes at one budget (the models it ran, smallest first): shared, or its own window
    (`sweeps.windows`), of one length for every arm, as the estimator fits each arm on K sizes."""
    windows = []
    for arm in arms:
        smallest = runs[runs["arm"] == arm].groupby("model")["n_params"].min()
        windows.append(sorted(smallest.index, key=smallest.get))
    if len({len(w) for w in windows}) > 1:
        raise FrontierError(f"{where}: the arms ran different numbers of sizes "
                            f"({', '.join(f'{a} {len(w)}' for a, w in zip(arms, windows, strict=True))}); "
                            "each arm's window needs as many")
    return windows


def _budget_rows(runs, units, sweep, dataset, budget, arms, split, kind, level, n_resamples, seed):
    where = f"{dataset}/{budget}"
    windows = _windows(runs, arms, where)
    nats, b, log_n, seeds = _budget_arrays(units, runs, windows, arms, kind, where)
    out = isoflop.estimate(nats, b, log_n, level=level, n_resamples=n_resamples, seed=seed)
    n_arms, n_sizes = log_n.shape
    per_seed = nats.sum(-1) / (isoflop.LN2 * b.sum())  # [A, K, S]
    tpp = _tokens_per_param(runs)
    flops = sweep[windows[0][0]]["budget_flops"]
    unit = "document" if kind == "doc" else "segment"
    common = {"dataset": dataset, "budget": budget, "budget_flops": flops, "split": split, "unit": unit}
    profile_rows = [{**common, "arm": arm, "size": sweep[model]["size"], "model": model,
                     "n_params": 10 ** log_n[a, k], "bpb": per_seed[a, k].mean(),
                     "bpb_sd": per_seed[a, k].std(ddof=1) if len(seeds) > 1 else np.nan,
                     "bpb_min": per_seed[a, k].min(), "bpb_max": per_seed[a, k].max(), "n_seeds": len(seeds),
                     "tokens_per_param": tpp.get((arm, model), np.nan)}
                    for a, arm in enumerate(arms) for k, model in enumerate(windows[a])]
    est, lo, hi = out["estimate"], out["ci_low"], out["ci_high"]
    rows = []
    for a, arm in enumerate(arms):
        ok = bool(out["bracketed"][a])
        reason = isoflop.bracket_reason(log_n[a], out["profile"][a])
        best = int(np.argmin(out["profile"][a]))
        keep = float if ok else _no_number  # an unbracketed optimum is an extrapolation: no number
        row = {**common, "arm": arm, "reference": arms[0], "n_sizes": n_sizes, "n_seeds": len(seeds),
               "n_units": nats.shape[-1], "bracketed": ok,
               "bracket_reason": reason, "_ref_bpb": est[0] if out["bracketed"][0] else np.nan,
               "share_bracketed": out["share_bracketed"][a],
               "fit_a": out["coef"][a, 0], "fit_b": out["coef"][a, 1], "fit_c": out["coef"][a, 2],
               "frontier_bpb": keep(est[a]), "frontier_ci_low": keep(lo[a]), "frontier_ci_high": keep(hi[a]),
               "frontier_se": keep(out["se"][a]), "n_star": keep(10 ** est[n_arms + a]),
               "n_star_ci_low": keep(10 ** lo[n_arms + a]), "n_star_ci_high": keep(10 ** hi[n_arms + a]),
               "best_size": sweep[windows[a][best]]["size"], "best_bpb": out["profile"][a, best]}
        if a:
            j, r = 2 * n_arms + a - 1, 3 * n_arms + a - 2
            both = ok and bool(out["bracketed"][0])
            keep = float if both else _no_number
            row.update({"effect": keep(est[j]), "ci_low": keep(lo[j]), "ci_high": keep(hi[j]),
                        "se": keep(out["se"][j]), "df": keep(out["df"][j]), "p": keep(out["p"][j]),
                        "rel_effect": keep(est[j] / est[0]), "n_star_ratio": keep(10 ** est[r]),
                        "n_star_ratio_ci_low": keep(10 ** lo[r]), "n_star_ratio_ci_high": keep(10 ** hi[r]),
                        "_bracketed_pair": both, "method": isoflop.METHOD})
        rows.append(row)
    return profile_rows, rows


def _adjust(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """p_adj, MDE and verdict: Holm over the primaries, BH over the exploratory comparisons; an unbracketed
    (or untestable) comparison counts in its family with p = 1."""
    from .stats import adjust

    table = table.copy()
    table["p_adj"], table["correction"], table["mde"], table["verdict"] = np.nan, "", np.nan, ""
    for family, method in (("primary", "holm"), ("exploratory", "bh")):
        sel = (table["family"] == family).to_numpy()
        if not sel.any():
            continue
        p = table.loc[sel, "p"].fillna(1.0).to_numpy(float)
        adjusted = holm(p) if method == "holm" else adjust(p, "bh")
        tested = table.loc[sel, "p"].notna().to_numpy()
        table.loc[sel, "p_adj"] = np.where(tested, adjusted, np.nan)
        table.loc[sel, "correction"] = method
        level = alpha / sel.sum() if method == "holm" else alpha  # Holm's strictest step
        table.loc[sel, "mde"] = isoflop.minimal_detectable_effect(table.loc[sel, "se"], table.loc[sel, "df"],
                                                                  level)
    reference = table["family"] == "reference"
    table["rel_mde"] = table["mde"] / table["_ref_bpb"]
    table["verdict"] = [
        "" if ref else test_verdict(e, lo, hi, p, alpha) if pair else NOT_BRACKETED
        for ref, pair, e, lo, hi, p in zip(reference, table["_bracketed_pair"].fillna(False), table["effect"],
                                           table["ci_low"], table["ci_high"], table["p_adj"], strict=True)]
    return table


def frontier_tables(runs: pd.DataFrame, units: pd.DataFrame, sweep: dict[str, dict], reference: str,
                    arms: Sequence[str], dataset: str, split: str = "test", unit: str = "auto",
                    alpha: float = ALPHA, n_resamples: int = isoflop.N_RESAMPLES,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(profiles, frontier): one row per dataset × arm × budget × size, and per dataset × arm × budget
    (columns PROFILE_COLUMNS, FRONTIER_COLUMNS). Arm rows after the reference carry the comparison."""
    wanted = [reference, *[a for a in arms if a != reference]]
    runs = runs[runs["arm"].isin(wanted)]
    if "mode" in runs.columns:
        runs = runs[runs["mode"] == "causal"]
    absent = [a for a in wanted if a not in set(runs["arm"])]
    if absent:
        raise FrontierError(f"arm(s) {', '.join(absent)} not in the runs table (causal rows)")
    budgets = {entry["budget"] for entry in sweep.values()}
    unknown = sorted(m for m in set(runs["model"]) - set(sweep) if budget_part(m) in budgets)
    if unknown:  # named like a sweep model ({budget}-{size}) but absent: a mis-wired sweep
        raise FrontierError(f"--sweep has no entry for model(s) {', '.join(unknown)}")
    runs = runs[runs["model"].isin(sweep)]  # a study's own models (not swept) are no part of a profile
    if not np.isfinite(runs["n_params"].to_numpy(float)).all() or (runs["n_params"] <= 0).any():
        raise FrontierError("runs table: n_params is not a positive finite number in every row")
    if dataset not in set(runs["dataset"]):
        raise FrontierError(f"--dataset {dataset} has no runs")
    units = units[(units["split"] == split) & units["arm"].isin(wanted)]
    profile_rows, rows = [], []
    for i, ((ds, budget), group) in enumerate(
            runs.assign(budget=runs["model"].map(lambda m: sweep[m]["budget"]))
            .groupby(["dataset", "budget"], sort=True)):
        flops = {sweep[m]["budget_flops"] for m in set(group["model"])}
        if len(flops) > 1:
            raise FrontierError(f"--sweep: budget {budget} has several budget_flops {sorted(flops)}")
        here = units[(units["dataset"] == ds) & units["model"].isin(set(group["model"]))]
        kind = unit_kind(units[units["dataset"] == ds], split, unit)  # per dataset: a few plays → segments
        p, r = _budget_rows(group, here, sweep, ds, budget, wanted, split, kind, 1 - alpha, n_resamples,
                            seed + i)
        family = "primary" if ds == dataset else "exploratory"
        for row in r:
            row["family"] = "reference" if row["arm"] == reference else family
        profile_rows += p
        rows += r
    table = _adjust(pd.DataFrame(rows), alpha)
    return (pd.DataFrame(profile_rows, columns=PROFILE_COLUMNS),
            table.reindex(columns=FRONTIER_COLUMNS).reset_index(drop=True))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsedepth.study.frontier",
                                description=__doc__.split("\n\n")[2].replace("\n", " "))
    p.add_argument("--runs", required=True, help="the tidy runs table (causal rows are used)")
    p.add_argument("--units", nargs="+", required=True, help="every run's RUN_DIR/units.csv")
    p.add_argument("--sweep", required=True,
                   help='JSON (text or file): {MODEL: {"budget": B, "budget_flops": F, "size": S}, ...}')
    p.add_argument("--reference", default="dense", help="the arm every frontier is compared with")
    p.add_argument("--arms", required=True, help="comma-separated arms compared with the reference")
    p.add_argument("--dataset", required=True, help="the confirmatory dataset (Holm); others: exploratory")
    p.add_argument("--split", default="test", choices=["validation", "test"], help="the split scored")
    p.add_argument("--unit", default="auto", choices=["auto", "document", "segment"],
                   help="resampling unit of text (auto: documents when the split has >= 30)")
    p.add_argument("--resamples", type=int, default=isoflop.N_RESAMPLES, help="document resamples")
    p.add_argument("--alpha", type=float, default=ALPHA, help="family-wise level; CIs are 1 - alpha")
    p.add_argument("--seed", type=int, default=0, help="RNG seed of the bootstrap")
    p.add_argument("--profiles-out", required=True, help="isoFLOP profiles CSV (one row per size)")
    p.add_argument("--out", required=True, help="frontier CSV (one row per dataset × arm × budget)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        runs = load(args.runs, "runs")
        if runs.empty:
            raise FrontierError(f"{args.runs}: no runs")
        missing = [u for u in args.units if not Path(u).is_file()]
        if missing:
            raise FrontierError(f"unit table not found: {missing[0]}")
        arms = [a for a in args.arms.split(",") if a]
        table, frontier = frontier_tables(runs, load_units(args.units, runs), read_sweep(args.sweep),
                                          args.reference, arms, args.dataset, args.split, args.unit,
                                          args.alpha, args.resamples, args.seed)
    except (ValueError, KeyError) as e:  # FrontierError, ResultsError, HypothesisError
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    write_csv(table, args.profiles_out)
    out = write_csv(frontier, args.out)
    print(f"wrote {args.profiles_out} and {out}")
    for row in frontier[frontier["family"] == "primary"].itertuples():
        numbers = (f"{row.effect:+.4f} bpb [{row.ci_low:+.4f}, {row.ci_high:+.4f}] p_holm={row.p_adj:.3g} "
                   f"N* ratio {row.n_star_ratio:.2f} -> " if row.verdict != NOT_BRACKETED else "")
        print(f"  {row.dataset}/{row.budget} {row.arm} - {row.reference}: {numbers}{row.verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
