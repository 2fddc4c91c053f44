"""The hypotheses in the paper: the primary-outcomes table and the macros the abstract and results quote.

Why here: the words "better", "worse" and "no detectable difference" and every number around them come
from results/stats.csv through this module, so the text can never claim more than the statistics found.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .hierarchical import DECIDED
from .hypotheses import ALPHA
from .latex import NA, empty_table, escape_latex, fmt_p, fmt_signed, p_clause, to_latex
from .results import require

ORDINALS = ("One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten")
STATS_REQUIRED = ("model", "dataset", "hypothesis", "family", "arm", "reference", "effect", "ci_low",
                  "ci_high", "p_adj", "p_t_adj", "mde", "rel_mde", "rel_effect", "verdict", "n_seeds",
                  "n_units", "unit", "split", "method", "candidates", "reference_bpb")


def tex_text(text: str) -> str:
    """Escaped text with the few non-ASCII signs the stats step writes made safe for pdflatex."""
    return escape_latex(text).replace("×", "$\\times$").replace("–", "--")


def fmt_bpb(x, digits: int = 4) -> str:
    return fmt_signed(x, digits)


def fmt_pct(x, digits: int = 2) -> str:
    return NA if not np.isfinite(x) else f"{100 * x:+.{digits}f}\\,\\%"


def fmt_ci(low, high, digits: int = 4) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return NA
    return f"$[{low:+.{digits}f}, {high:+.{digits}f}]$"


def fmt_mde(x, digits: int = 4) -> str:
    return NA if not np.isfinite(x) else f"{x:.{digits}f}"


def primaries(stats: pd.DataFrame) -> pd.DataFrame:
    if stats.empty or "family" not in stats.columns:
        return pd.DataFrame(columns=STATS_REQUIRED)
    require(stats, STATS_REQUIRED, "stats table")
    return stats[stats["family"] == "primary"].reset_index(drop=True)


def format_hypotheses(stats: pd.DataFrame) -> str:
    """The primary comparisons: effect in bits/byte with its CI, Holm-adjusted p (hierarchical bootstrap
    and the seed-level t-test), the minimal detectable effect, and the verdict."""
    rows = primaries(stats)
    if rows.empty:
        return empty_table("The study's primary comparisons.", "tab:hypotheses",
                           "no primary comparisons: none declared, or results/stats.csv is missing")
    one_cell = rows[["model", "dataset"]].drop_duplicates().shape[0] == 1
    labels = [h if one_cell else f"{m}/{d}: {h}"
              for h, m, d in zip(rows["hypothesis"], rows["model"], rows["dataset"], strict=True)]
    keys = pd.DataFrame({"Hypothesis": [escape_latex(label) for label in labels]})
    disp = pd.DataFrame({
        "Arm": [f"\\texttt{{{escape_latex(a)}}}" for a in rows["arm"]],
        r"$\Delta$ bits/byte": [fmt_bpb(x) for x in rows["effect"]],
        "95\\% CI": [fmt_ci(lo, hi) for lo, hi in zip(rows["ci_low"], rows["ci_high"], strict=True)],
        "rel.": [fmt_pct(x) for x in rows["rel_effect"]],
        r"$p_{\mathrm{Holm}}$": [fmt_p(x) for x in rows["p_adj"]],
        r"$p^{\mathrm{seed}}_{\mathrm{Holm}}$": [fmt_p(x) for x in rows["p_t_adj"]],
        "MDE": [f"{fmt_mde(m)} ({fmt_pct(r, 1).lstrip('+')})" for m, r in
                zip(rows["mde"], rows["rel_mde"], strict=True)],
        "Verdict": [escape_latex(v) for v in rows["verdict"]],
    })
    first = rows.iloc[0]
    caption = (f"Primary comparisons (Holm over these {len(rows)}): difference in "
               f"{escape_latex(first['split'])} bits per byte (arm $-$ reference; negative is better), "
               f"{tex_text(first['method'])} over "
               f"{fmt_seeds(rows)} seeds and {int(first['n_units'])} {escape_latex(first['unit'])}s, "
               "relative to the reference; $p^{\\mathrm{seed}}$ is the conservative seed-level paired "
               "$t$-test. MDE: the minimal detectable effect at 80\\,\\% power and Holm's strictest level, "
               "by simulation from the observed variances (relative to the reference's bits/byte). A "
               "\\emph{best of} hypothesis selects the candidate with the lowest validation bits/byte and "
               "multiplies its $p$-values by the number of candidates.")
    return to_latex(pd.concat([keys, disp], axis=1), 1, caption, "tab:hypotheses", rule_keys=0)


def fmt_seeds(rows: pd.DataFrame) -> str:
    n = sorted({int(x) for x in rows["n_seeds"]})
    return str(n[0]) if len(n) == 1 else f"{n[0]}--{n[-1]}"


def outcome_sentence(row) -> str:
    """One primary outcome in words: the verdict, then the numbers that decided it."""
    return (f"{escape_latex(row['hypothesis'])} (\\texttt{{{escape_latex(row['arm'])}}}): "
            f"\\emph{{{escape_latex(row['verdict'])}}} ($\\Delta$ = {fmt_bpb(row['effect'])} bits/byte, "
            f"95\\,\\% CI {fmt_ci(row['ci_low'], row['ci_high'])}, {p_clause(row['p_adj'])}; "
            f"MDE {fmt_mde(row['mde'])})")


def hypothesis_numbers(stats: pd.DataFrame) -> dict[str, str]:
    """Macros for the text: `Hyp<Ordinal><Field>` per primary, `PrimaryOutcomes` (every primary in words),
    counts of the families, and the statistical method as the stats step names it."""
    m: dict[str, str] = {"NumPrimaries": "0", "NumExploratory": "0", "NumExploratorySignificant": "0",
                         "PrimaryOutcomes": "no primary comparison was declared or tested",
                         "StatsMethod": NA, "StatsUnit": NA, "StatsSplit": NA, "NumUnits": NA,
                         "MaxRelMDE": NA, "NumDecided": "0"}
    rows = primaries(stats)
    described = rows if not rows.empty else stats  # without primaries: the exploratory comparisons' method
    if not described.empty:
        first = described.iloc[0]
        m.update(StatsMethod=tex_text(first["method"]), StatsUnit=escape_latex(first["unit"]),
                 StatsSplit=escape_latex(first["split"]), NumUnits=str(int(first["n_units"])))
    if not rows.empty:
        m.update(NumPrimaries=str(len(rows)),
                 MaxRelMDE=fmt_pct(float(rows["rel_mde"].max()), 1).lstrip("+"),
                 NumDecided=str(int(rows["verdict"].isin(DECIDED).sum())),
                 PrimaryOutcomes="; ".join(outcome_sentence(r) for _, r in rows.iterrows()))
        for i, r in rows.head(len(ORDINALS)).iterrows():
            prefix = f"Hyp{ORDINALS[i]}"
            fields = {"Label": escape_latex(r["hypothesis"]), "Arm": escape_latex(r["arm"]),
                      "Reference": escape_latex(r["reference"]), "Effect": fmt_bpb(r["effect"]),
                      "Rel": fmt_pct(r["rel_effect"]), "CI": fmt_ci(r["ci_low"], r["ci_high"]),
                      "P": fmt_p(r["p_adj"]), "Pt": fmt_p(r["p_t_adj"]), "MDE": fmt_mde(r["mde"]),
                      "RelMDE": fmt_pct(r["rel_mde"], 1).lstrip("+"), "Verdict": escape_latex(r["verdict"]),
                      "Seeds": str(int(r["n_seeds"])), "Candidates": str(int(r["candidates"]))}
            m.update({prefix + k: v for k, v in fields.items()})
    m["ExploratoryOutcomes"] = "none"
    if not stats.empty and "family" in stats.columns:
        exploratory = stats[stats["family"] == "exploratory"]
        m["NumExploratory"] = str(len(exploratory))
        m["NumExploratorySignificant"] = str(int((exploratory["p_adj"] < ALPHA).sum()))
        if not exploratory.empty:
            m["ExploratoryOutcomes"] = "; ".join(
                f"\\texttt{{{escape_latex(r['arm'])}}} at {escape_latex(r['model'])}: "
                f"{escape_latex(r['verdict'])} "
                f"({fmt_bpb(r['effect'])} bits/byte, {fmt_ci(r['ci_low'], r['ci_high'])}, "
                f"{p_clause(r['p_adj']).replace('Holm', 'BH')})" for _, r in exploratory.iterrows())
    return m
