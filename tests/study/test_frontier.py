"""The frontier command, its table, macros and figures, on a tiny synthetic isoFLOP grid (fabricated runs
and units in the contract's shape; the estimator's known-answer tests are in test_isoflop.py)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from sparsedepth.study import figures, frontier, tables
from sparsedepth.study.frontier_report import format_frontier, frontier_numbers

SIZES = {"d32": 1.0e5, "d48": 2.25e5, "d64": 4.0e5, "d96": 9.0e5}
BUDGETS = {"C1": 4e11, "C2": 1.2e12}
# (dataset, budget, arm): (frontier bpb, log10 N*); mod at C2 keeps improving past d96: not bracketed
TRUTH = {("enwik8", "C1", "dense"): (2.50, 5.45), ("enwik8", "C1", "mod"): (2.46, 5.60),
         ("enwik8", "C2", "dense"): (2.40, 5.55), ("enwik8", "C2", "mod"): (2.38, 6.40),
         ("shakespeare", "C1", "dense"): (2.20, 5.45), ("shakespeare", "C1", "mod"): (2.21, 5.45)}


def write_grid(root, seeds=(0, 1, 2), n_docs=30, window=lambda budget, arm: SIZES):
    """runs.csv, every run's units.csv and the sweep JSON of a 2-budget × 4-size × 2-arm grid (`window`:
    each (budget, arm)'s sizes, {name: params})."""
    rng = np.random.default_rng(0)
    doc_bytes = {ds: rng.integers(2000, 12000, n_docs).astype(float) for ds in ("enwik8", "shakespeare")}
    runs, units, sweep = [], [], {}
    for (ds, budget, arm), (f0, x_star) in TRUTH.items():
        for size, n in window(budget, arm).items():
            model = f"{budget}-{size}"
            sweep[model] = {"budget": budget, "budget_flops": BUDGETS[budget], "size": size}
            for seed in seeds:
                bpb = f0 + 0.3 * (math.log10(n) - x_star) ** 2 + 0.004 * rng.standard_normal()
                run_dir = root / "runs" / model / arm / ds / f"seed{seed}"
                run_dir.mkdir(parents=True, exist_ok=True)
                per_doc = bpb + 0.01 * rng.standard_normal(n_docs)
                nats = per_doc * math.log(2) * doc_bytes[ds]
                pd.DataFrame({"mode": "causal", "split": "test", "doc": range(n_docs), "segment": 0,
                              "nats": nats, "tokens": 1000, "bytes": doc_bytes[ds]}).to_csv(
                    run_dir / "units.csv", index=False)
                units.append(str(run_dir / "units.csv"))
                runs.append({"model": model, "variant": arm, "arm": arm, "router": arm, "dataset": ds,
                             "seed": seed, "mode": "causal", "n_params": n * (1.01 if arm == "mod" else 1),
                             "steps": 100, "batch_size": 8, "seq_len": 128, "val_bpb": bpb, "test_bpb": bpb,
                             "run_dir": str(run_dir)})
    pd.DataFrame(runs).to_csv(root / "runs.csv", index=False)
    return str(root / "runs.csv"), units, json.dumps(sweep)


def run_cli(tmp_path, runs, units, sweep, *extra):
    argv = ["--runs", runs, "--units", *units, "--sweep", sweep, "--reference", "dense", "--arms", "mod",
            "--dataset", "enwik8", "--resamples", "200", "--profiles-out", str(tmp_path / "isoflop.csv"),
            "--out", str(tmp_path / "frontier.csv"), *extra]
    return frontier.main(argv)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    runs, units, sweep = write_grid(root)
    assert run_cli(root, runs, units, sweep) == 0
    return root, pd.read_csv(root / "isoflop.csv"), pd.read_csv(root / "frontier.csv")


def test_profiles_have_one_row_per_dataset_arm_budget_size(grid):
    _, prof, _ = grid
    assert len(prof) == len(TRUTH) * len(SIZES)
    assert list(prof.columns) == frontier.PROFILE_COLUMNS
    row = prof[(prof["dataset"] == "enwik8") & (prof["arm"] == "dense") & (prof["model"] == "C1-d64")].iloc[0]
    assert row["n_seeds"] == 3 and row["size"] == "d64" and row["unit"] == "document"
    assert row["tokens_per_param"] == pytest.approx(100 * 8 * 128 / 4.0e5)
    assert row["bpb"] == pytest.approx(2.50 + 0.3 * (math.log10(4e5) - 5.45) ** 2, abs=0.01)


def test_frontier_recovers_the_known_optima_and_flags_the_unbracketed(grid):
    _, _, fr = grid
    assert list(fr.columns) == frontier.FRONTIER_COLUMNS
    c1 = fr[(fr["dataset"] == "enwik8") & (fr["budget"] == "C1")].set_index("arm")
    assert c1.loc["dense", "frontier_bpb"] == pytest.approx(2.50, abs=0.01)
    assert math.log10(c1.loc["dense", "n_star"]) == pytest.approx(5.45, abs=0.1)
    assert c1.loc["mod", "effect"] == pytest.approx(-0.04, abs=0.01)
    assert c1.loc["mod", "ci_low"] < c1.loc["mod", "effect"] < c1.loc["mod", "ci_high"]
    assert c1.loc["mod", "verdict"] == "better" and c1.loc["mod", "family"] == "primary"
    assert c1.loc["mod", "correction"] == "holm" and c1.loc["dense", "family"] == "reference"
    c2 = fr[(fr["dataset"] == "enwik8") & (fr["budget"] == "C2")].set_index("arm")
    assert not c2.loc["mod", "bracketed"] and c2.loc["mod", "verdict"] == "not bracketed"
    assert c2.loc["mod", "bracket_reason"] == "lowest bpb at the largest size"
    assert np.isnan(c2.loc["mod", "effect"]) and np.isnan(c2.loc["mod", "frontier_bpb"])
    # the unbracketed comparison stays in Holm's family (p = 1): C1's p is doubled, not left alone
    assert c1.loc["mod", "p_adj"] == pytest.approx(min(1.0, 2 * c1.loc["mod", "p"]))
    sh = fr[(fr["dataset"] == "shakespeare") & (fr["arm"] == "mod")].iloc[0]
    assert sh["family"] == "exploratory" and sh["correction"] == "bh"


def test_each_arm_may_have_its_own_window_of_sizes(tmp_path):
    """Mod at C2 peaks past d96: its own window (d64-d384) brackets it, while dense keeps d32-d96."""
    wider = {"d64": 4.0e5, "d96": 9.0e5, "d192": 3.6e6, "d384": 1.44e7}
    runs, units, sweep = write_grid(tmp_path, window=lambda b, a: wider if (b, a) == ("C2", "mod") else SIZES)
    assert run_cli(tmp_path, runs, units, sweep) == 0
    fr = pd.read_csv(tmp_path / "frontier.csv")
    c2 = fr[(fr["dataset"] == "enwik8") & (fr["budget"] == "C2")].set_index("arm")
    assert c2.loc["mod", "bracketed"] and math.log10(c2.loc["mod", "n_star"]) == pytest.approx(6.40, abs=0.1)
    assert c2.loc["mod", "effect"] == pytest.approx(-0.02, abs=0.01)
    prof = pd.read_csv(tmp_path / "isoflop.csv")
    assert set(prof[(prof["budget"] == "C2") & (prof["arm"] == "mod")]["size"]) == set(wider)
    assert set(prof[(prof["budget"] == "C2") & (prof["arm"] == "dense")]["size"]) == set(SIZES)


def test_arms_with_windows_of_different_lengths_are_one_line(tmp_path, capsys):
    fewer = {k: v for k, v in SIZES.items() if k != "d32"}
    runs, units, sweep = write_grid(tmp_path, window=lambda b, arm: fewer if arm == "mod" else SIZES)
    assert run_cli(tmp_path, runs, units, sweep) != 0
    err = capsys.readouterr().err.strip()
    assert "ran different numbers of sizes (dense 4, mod 3)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "frontier.csv").exists()


def test_table_and_macros(grid):
    _, _, fr = grid
    tex = format_frontier(fr)
    assert "\\label{tab:frontier}" in tex and "not bracketed" in tex and "\\toprule" in tex
    m = frontier_numbers(fr)
    assert all(re.fullmatch(r"[A-Za-z]+", k) for k in m)
    assert m["FrontierModCOneVerdict"] == "better" and m["FrontierModCTwoVerdict"] == "not bracketed"
    assert m["FrontierModCTwoEffect"] == "\\textit{n/a}" and m["FrontierNumComparisons"] == "2"
    assert "not bracketed" in m["FrontierOutcome"] and "better" in m["FrontierOutcome"]
    assert "FrontierShakespeareModCOneEffect" in m
    empty = frontier_numbers(pd.DataFrame())
    assert empty["FrontierOutcome"] == "no isoFLOP frontier was measured"


@pytest.mark.parametrize("name", ["isoflop", "frontier"])
def test_figure_cli_writes_pdf_and_png(grid, name):
    root, _, _ = grid
    out = root / "figures" / f"{name}.pdf"
    assert figures.main([name, "--profiles", str(root / "isoflop.csv"), "--frontier",
                         str(root / "frontier.csv"), "--baseline", "dense", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and out.with_suffix(".png").stat().st_size > 1000


def test_table_cli_writes_tex_and_says_when_absent(grid, tmp_path):
    root, _, _ = grid
    out = tmp_path / "frontier.tex"
    assert tables.main(["frontier", "--frontier", str(root / "frontier.csv"), "--baseline", "dense",
                        "--out", str(out)]) == 0
    assert "tab:frontier" in out.read_text()
    assert tables.main(["frontier", "--baseline", "dense", "--out", str(out)]) == 0
    assert "missing or empty" in out.read_text()


@pytest.mark.parametrize("breakage, message", [
    ("missing_units", "unit table not found"),
    ("sweep_lacks_model", "no entry for model"),
    ("nan_nats", "non-finite nats"),
    ("bad_json", "not JSON"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, breakage, message):
    runs, units, sweep = write_grid(tmp_path, seeds=(0, 1), n_docs=30)
    if breakage == "missing_units":
        units = [*units, str(tmp_path / "nowhere" / "units.csv")]
    elif breakage == "sweep_lacks_model":
        sweep = json.dumps({k: v for k, v in json.loads(sweep).items() if k != "C1-d48"})
    elif breakage == "nan_nats":
        frame = pd.read_csv(units[0])
        frame.loc[0, "nats"] = np.nan
        frame.to_csv(units[0], index=False)
    else:
        sweep = "{not json"
    assert run_cli(tmp_path, runs, units, sweep) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "frontier.csv").exists() and not (tmp_path / "isoflop.csv").exists()
