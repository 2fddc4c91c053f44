"""The primary-outcomes table and the macros the abstract quotes come from stats.csv, words included."""

from __future__ import annotations

import pandas as pd
from test_tables import synthetic_results

from sparsedepth.study.report import format_hypotheses, hypothesis_numbers


def test_hypotheses_table_lists_every_primary_with_its_verdict():
    stats = synthetic_results()["stats"]
    tex = format_hypotheses(stats)
    primary = stats[stats["family"] == "primary"]
    assert tex.count("\\texttt{") >= len(primary) and "tab:hypotheses" in tex
    for verdict in set(primary["verdict"]):
        assert verdict in tex
    assert "$\\times$" in tex and "×" not in tex  # pdflatex-safe method name


def test_outcome_macros_carry_the_numbers_and_words_of_stats():
    stats = synthetic_results()["stats"]
    m = hypothesis_numbers(stats)
    primary = stats[stats["family"] == "primary"].reset_index(drop=True)
    assert m["NumPrimaries"] == str(len(primary))
    assert m["HypOneVerdict"] == primary.loc[0, "verdict"]
    assert f"{primary.loc[0, 'effect']:+.4f}" in m["HypOneEffect"]
    assert all(v in m["PrimaryOutcomes"] for v in primary["verdict"])
    assert m["NumExploratory"] == str(int((stats["family"] == "exploratory").sum()))


def test_without_primaries_the_text_says_so():
    m = hypothesis_numbers(pd.DataFrame())
    assert m["NumPrimaries"] == "0" and "no primary" in m["PrimaryOutcomes"]
    assert "none declared" in format_hypotheses(pd.DataFrame())


def test_without_primaries_the_method_is_the_exploratory_comparisons():
    stats = synthetic_results()["stats"]
    m = hypothesis_numbers(stats[stats["family"] == "exploratory"])
    first = stats[stats["family"] == "exploratory"].iloc[0]
    assert m["NumPrimaries"] == "0" and m["NumUnits"] == str(int(first["n_units"]))
    assert m["StatsUnit"] == first["unit"] and "n/a" not in m["StatsMethod"]
