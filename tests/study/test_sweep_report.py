"""The Setup section's sweep sentences are read from the runs that exist, not from the config."""

import pandas as pd

from sparsedepth.study.latex import NA
from sparsedepth.study.sweep_report import sweep_numbers


def _runs(rows):
    return pd.DataFrame([{"mode": "causal", "n_params": 1e4, "model": m, "arm": a, "dataset": d, "seed": s}
                         for m, a, d, s in rows])


FRONTIER = pd.DataFrame({"dataset": ["enwik8", "enwik8"], "budget": ["C1", "C1"],
                         "budget_flops": [1e11, 1e11], "arm": ["dense", "mod"],
                         "family": ["reference", "primary"], "n_sizes": [4, 4]})


def test_a_study_of_one_corpus_says_so_and_names_its_exploratory_cell():
    runs = _runs([("C1-d8", "dense", "enwik8", 0), ("C1-d8", "mod", "enwik8", 1),
                  ("C1-d8", "random", "enwik8", 0), ("C1-d8", "early_exit", "enwik8", 0)])
    m = sweep_numbers(runs, FRONTIER)
    assert m["SweepOtherDomains"] == "No second corpus is swept in this study."
    assert m["SweepExplore"] == "at C1-d8 on enwik8 with 1 seed"
    assert m["SweepSeeds"] == "2" and m["SweepNumRuns"] == "2"


def test_a_second_swept_corpus_is_named_with_its_budgets_and_seeds():
    frontier = pd.concat([FRONTIER, FRONTIER.assign(dataset="shakespeare", family="exploratory")])
    runs = _runs([("C1-d8", "dense", "enwik8", 0), ("C1-d8", "dense", "shakespeare", 0),
                  ("C1-d8", "mod", "shakespeare", 0)])
    m = sweep_numbers(runs, frontier)
    assert m["SweepOtherDomains"] == "Shakespeare is swept at C1 with 1 seed, as a second kind of text " \
                                     "(exploratory)."
    assert m["SweepExplore"] == NA
