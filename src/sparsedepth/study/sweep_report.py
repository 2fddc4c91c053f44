"""The isoFLOP sweep's design in the paper's words: budgets, sizes, arms, tokens per parameter and passes over
the data, read from what the runs did (runs.csv) and what the frontier rule fitted (frontier.csv), so the
Setup section cannot describe a sweep other than the one that ran."""

from __future__ import annotations

import math

import pandas as pd

from .latex import NA, escape_latex
from .sweeps import budget_part

SWEEP_MACROS = ("SweepDataset", "SweepBudgets", "SweepNumBudgets", "SweepNumSizes", "SweepArms",
                "SweepParams", "SweepTokensPerParam", "SweepMaxEpochs", "SweepNumRuns", "SweepSeeds",
                "SweepTestTokens", "SweepTestShare", "SweepOtherDomains", "SweepExplore")


def flops_latex(flops: float) -> str:
    """3e11 → `$3\times10^{11}$`, 1e12 → `$10^{12}$` (as budgets are written in papers)."""
    exponent = math.floor(math.log10(flops))
    mantissa = flops / 10**exponent
    head = "" if round(mantissa, 2) == 1 else f"{mantissa:.3g}\\times"
    return f"${head}10^{{{exponent}}}$"


def _words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fmt_range(values: pd.Series, digits: int = 0) -> str:
    lo, hi = float(values.min()), float(values.max())
    if round(lo, digits) == round(hi, digits):
        return f"{lo:,.{digits}f}"
    return f"{lo:,.{digits}f}--{hi:,.{digits}f}"


def sweep_numbers(runs: pd.DataFrame, frontier: pd.DataFrame) -> dict[str, str]:
    """`\\newcommand` values describing the confirmatory dataset's sweep; `n/a` without a frontier."""
    m = dict.fromkeys(SWEEP_MACROS, NA)
    m["SweepNumBudgets"] = m["SweepNumRuns"] = "0"
    if frontier.empty or runs.empty:
        return m
    confirm = frontier[frontier["family"] != "exploratory"]
    dataset = str(confirm["dataset"].iloc[0])
    budgets = confirm.drop_duplicates("budget").sort_values("budget_flops")
    arms = list(dict.fromkeys(confirm["arm"]))
    budgets_run = set(confirm["budget"])
    in_budget = runs["model"].map(lambda name: budget_part(name) in budgets_run)
    on_sweep = runs[(runs["mode"] == "causal") & in_budget]
    swept = on_sweep[(on_sweep["dataset"] == dataset) & on_sweep["arm"].isin(arms)]
    m["SweepDataset"] = escape_latex(dataset)
    m["SweepBudgets"] = _words([f"{escape_latex(b)} = {flops_latex(f)}" for b, f in
                                zip(budgets["budget"], budgets["budget_flops"], strict=True)])
    m["SweepNumBudgets"] = str(len(budgets))
    m["SweepNumSizes"] = _fmt_range(confirm["n_sizes"])
    m["SweepArms"] = _words([f"\\texttt{{{escape_latex(a)}}}" for a in arms])
    m.update(_around(on_sweep, frontier, arms))
    if swept.empty:
        return m
    m["SweepParams"] = f"{_fmt_range(swept['n_params'] / 1e3, 1)}\\,k"
    m["SweepNumRuns"] = str(len(swept))
    m["SweepSeeds"] = str(swept["seed"].nunique())
    if "tokens_per_param" in swept:
        m["SweepTokensPerParam"] = _fmt_range(swept["tokens_per_param"])
    if {"test_tokens", "test_split_tokens"} <= set(swept) and swept["test_tokens"].notna().any():
        scored, length = swept["test_tokens"].max(), swept["test_split_tokens"].max()
        m["SweepTestTokens"] = f"{int(scored):,}".replace(",", "{,}")
        m["SweepTestShare"] = f"{100 * scored / length:.1f}\\,\\%"
    if "epochs" in swept and swept["epochs"].notna().any():
        m["SweepMaxEpochs"] = f"{swept['epochs'].max():.3f}"
    return m


def _seeds(runs: pd.DataFrame) -> str:
    n = runs["seed"].nunique()
    return f"{n} seed" + ("s" if n > 1 else "")


def _around(on_sweep: pd.DataFrame, frontier: pd.DataFrame, arms: list[str]) -> dict[str, str]:
    """The sentences around the primaries, from the causal runs of the sweep's budgets: which other corpora
    were swept (`SweepOtherDomains`) and where the arms outside the frontier ran (`SweepExplore`)."""
    sentences = []
    for dataset, rows in frontier[frontier["family"] == "exploratory"].groupby("dataset", sort=False):
        done = on_sweep[(on_sweep["dataset"] == dataset) & on_sweep["arm"].isin(arms)]
        where = _words(sorted(map(escape_latex, set(rows["budget"]))))
        sentences.append(f"{escape_latex(str(dataset)).capitalize()} is swept at {where} with "
                         f"{_seeds(done)}, as a second kind of text (exploratory).")
    out = {"SweepOtherDomains": " ".join(sentences) or "No second corpus is swept in this study."}
    rest = on_sweep[~on_sweep["arm"].isin(arms)]
    if not rest.empty:
        cells = sorted({f"{m} on {d}" for m, d in zip(rest["model"], rest["dataset"], strict=True)})
        out["SweepExplore"] = f"at {_words([escape_latex(c) for c in cells])} with {_seeds(rest)}"
    return out
