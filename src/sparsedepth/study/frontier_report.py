"""The isoFLOP frontier in the paper: its table (`tables frontier`) and the macros the text quotes.

Why apart from `study.frontier`: the words (better, worse, no detectable difference, not bracketed) and every
number around them come from results/frontier.csv through here, so the text cannot claim an optimum the
sweep did not bracket.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .hierarchical import DECIDED
from .latex import NA, empty_table, escape_latex, fmt_p, fmt_si, macro_name, p_clause, to_latex
from .report import fmt_bpb, fmt_ci, fmt_mde, fmt_pct
from .results import require

FRONTIER_REQUIRED = ("dataset", "budget", "budget_flops", "arm", "reference", "family", "bracketed",
                     "frontier_bpb", "frontier_ci_low", "frontier_ci_high", "n_star", "n_star_ci_low",
                     "n_star_ci_high", "effect", "ci_low", "ci_high", "rel_effect", "p_adj", "mde", "rel_mde",
                     "n_star_ratio", "n_star_ratio_ci_low", "n_star_ratio_ci_high", "verdict", "n_seeds",
                     "n_units", "n_sizes")
NOT_BRACKETED = "not bracketed"


def _rows(frontier: pd.DataFrame) -> pd.DataFrame:
    if frontier.empty:
        return frontier
    require(frontier, FRONTIER_REQUIRED, "frontier table")
    order = {"reference": 0, "primary": 1, "exploratory": 2}
    return (frontier.assign(_f=frontier["family"].map(order), _ds=frontier["family"] == "exploratory")
            .sort_values(["_ds", "dataset", "budget_flops", "_f", "arm"], kind="stable")
            .drop(columns=["_f", "_ds"]).reset_index(drop=True))


def _size_ci(n, lo, hi) -> str:
    if not np.isfinite(n):
        return NA
    ci = f" [{fmt_si(lo, 1)}, {fmt_si(hi, 1)}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{fmt_si(n, 1)}{ci}"


def _ratio(r, lo, hi) -> str:
    if not np.isfinite(r):
        return NA
    ci = f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{r:.2f}{ci}"


def format_frontier(frontier: pd.DataFrame) -> str:
    """Per budget × arm: N* (95 % CI), frontier bpb (CI), Δ vs the reference (CI), relative Δ, the
    optimal-size ratio, Holm's p and the verdict; unbracketed rows say so instead of a number."""
    rows = _rows(frontier)
    label = "tab:frontier"
    if rows.empty:
        return empty_table("The isoFLOP frontier per training budget.", label,
                           "no isoFLOP frontier: results/frontier.csv is missing or empty")
    several = rows["dataset"].nunique() > 1
    keys = {"Budget": [f"{escape_latex(b)} ({fmt_si(f, 1)}FLOP)" for b, f in
                       zip(rows["budget"], rows["budget_flops"], strict=True)],
            "Arm": [f"\\texttt{{{escape_latex(a)}}}" for a in rows["arm"]]}
    if several:
        keys = {"Dataset": [escape_latex(d) for d in rows["dataset"]], **keys}
    bracketed = rows["bracketed"].astype(bool)
    disp = pd.DataFrame({
        "$N^*$ [95\\% CI]": [_size_ci(*v) if ok else NOT_BRACKETED for ok, *v in zip(
            bracketed, rows["n_star"], rows["n_star_ci_low"], rows["n_star_ci_high"], strict=True)],
        "Optimal bits/byte": [f"{m:.4f} {fmt_ci(lo, hi, 4).replace('+', '')}" if ok else "--"
                              for ok, m, lo, hi in zip(bracketed, rows["frontier_bpb"],
                                                       rows["frontier_ci_low"], rows["frontier_ci_high"],
                                                       strict=True)],
        "$\\Delta$ [95\\% CI]": ["--" if f == "reference" else NA if not np.isfinite(e) else
                                f"{fmt_bpb(e)} {fmt_ci(lo, hi)}" for f, e, lo, hi in
                                zip(rows["family"], rows["effect"], rows["ci_low"], rows["ci_high"],
                                    strict=True)],
        "rel.": ["--" if f == "reference" else fmt_pct(x) for f, x in
                 zip(rows["family"], rows["rel_effect"], strict=True)],
        "$N^*/N^*_{\\mathrm{ref}}$": ["--" if f == "reference" else _ratio(*v) for f, *v in zip(
            rows["family"], rows["n_star_ratio"], rows["n_star_ratio_ci_low"], rows["n_star_ratio_ci_high"],
            strict=True)],
        "$p_{\\mathrm{adj}}$": ["--" if f == "reference" else fmt_p(p) for f, p in
                                zip(rows["family"], rows["p_adj"], strict=True)],
        "Verdict": [escape_latex(v) if isinstance(v, str) and v else "--" for v in rows["verdict"]],
    })
    keys = pd.DataFrame(keys)
    primary = rows[rows["family"] == "primary"]
    seeds = sorted({int(s) for s in rows["n_seeds"]})
    caption = (f"The isoFLOP frontier: at each training budget every arm is trained at "
               f"{'--'.join(str(k) for k in sorted({int(k) for k in rows['n_sizes']}))} sizes over "
               f"{'--'.join(str(s) for s in seeds)} shared seeds; a parabola in $\\log N$ (Chinchilla's "
               "approach 2) gives the optimal size $N^*$ and the optimal bits per byte. $\\Delta$: optimal "
               "bits/byte of the arm minus the reference's (negative is better), with 95\\,\\% CIs from a "
               "crossed seed $\\times$ document bootstrap that refits every parabola (each CI on its own, "
               "not adjusted for multiplicity, so a CI can exclude zero where the adjusted $p$ does not "
               "reach 0.05); $p$ is Holm-adjusted "
               f"over the {len(primary)} primary comparisons (other datasets: exploratory, "
               "Benjamini--Hochberg). \\emph{Not bracketed}: the lowest point is at an end of the sweep or "
               "the fitted optimum lies outside it, so no optimum is reported.")
    return to_latex(pd.concat([keys, disp], axis=1), keys.shape[1], caption, label, keys.shape[1] - 1)


def _comparison_sentence(r) -> str:
    where = f"{escape_latex(r['budget'])}"
    if r["verdict"] == NOT_BRACKETED:
        return f"\\texttt{{{escape_latex(r['arm'])}}} at {where}: \\emph{{not bracketed}}"
    ratio = _ratio(r["n_star_ratio"], r["n_star_ratio_ci_low"], r["n_star_ratio_ci_high"])
    return (f"\\texttt{{{escape_latex(r['arm'])}}} at {where}: \\emph{{{escape_latex(r['verdict'])}}} "
            f"($\\Delta$ = {fmt_bpb(r['effect'])} bits/byte, "
            f"95\\,\\% CI {fmt_ci(r['ci_low'], r['ci_high'])}, {p_clause(r['p_adj'])}; "
            f"optimal-size ratio {ratio})")


def frontier_numbers(frontier: pd.DataFrame) -> dict[str, str]:
    """`\\newcommand` values: `Frontier<Arm><Budget><Field>` for every primary comparison (Field: Effect,
    CI, Rel, P, Verdict, Ratio, RatioCI, MDE, Bpb), the same prefixed by the dataset for exploratory ones,
    `FrontierOutcome` (every primary in one sentence), `FrontierNumComparisons`, `FrontierNumBracketed`,
    `FrontierNumDecided`, `FrontierReference`, `FrontierMaxRelMDE`. Always defined: empty results read
    `n/a` or say that no frontier was measured."""
    m = {"FrontierOutcome": "no isoFLOP frontier was measured", "FrontierNumComparisons": "0",
         "FrontierNumBracketed": "0", "FrontierNumDecided": "0", "FrontierReference": NA,
         "FrontierMaxRelMDE": NA}
    rows = _rows(frontier)
    if rows.empty:
        return m
    comparisons = rows[rows["family"] != "reference"]
    primary = comparisons[comparisons["family"] == "primary"]
    m["FrontierReference"] = escape_latex(rows["reference"].iloc[0])
    m["FrontierNumComparisons"] = str(len(primary))
    m["FrontierNumBracketed"] = str(int((primary["verdict"] != NOT_BRACKETED).sum()))
    m["FrontierNumDecided"] = str(int(primary["verdict"].isin(DECIDED).sum()))
    rel_mde = primary["rel_mde"].dropna()
    if not rel_mde.empty:
        m["FrontierMaxRelMDE"] = fmt_pct(float(rel_mde.max()), 1).lstrip("+")
    if not primary.empty:
        m["FrontierOutcome"] = "; ".join(_comparison_sentence(r) for _, r in primary.iterrows())
    for _, r in comparisons.iterrows():
        parts = (r["arm"], r["budget"]) if r["family"] == "primary" else (r["dataset"], r["arm"], r["budget"])
        prefix = "Frontier" + macro_name(*parts)
        fields = {"Effect": fmt_bpb(r["effect"]), "CI": fmt_ci(r["ci_low"], r["ci_high"]),
                  "Rel": fmt_pct(r["rel_effect"]), "P": fmt_p(r["p_adj"]),
                  "Verdict": escape_latex(r["verdict"]), "Bpb": fmt_mde(r["frontier_bpb"]),
                  "Ratio": _ratio(r["n_star_ratio"], np.nan, np.nan),
                  "RatioCI": fmt_ci(r["n_star_ratio_ci_low"], r["n_star_ratio_ci_high"], 2).replace("+", ""),
                  "MDE": fmt_mde(r["mde"])}
        m.update({prefix + k: v for k, v in fields.items()})
    return m
