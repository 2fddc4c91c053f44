"""Declared hypotheses: primaries under Holm, the rest exploratory under BH, best-of selection, verdicts, and
the `python -m sparsedepth.study.stats` command on per-unit tables (synthetic runs with known effects)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sparsedepth.study.hypotheses import HypothesisError, load_units, run_hypotheses
from sparsedepth.study.stats import main

EFFECTS = {"dense": 0.0, "probe": -0.05, "probe-frozen": 0.30, "mod": 0.0, "threshold": 0.08, "mor": 0.02}
PRIMARIES = [{"arm": "probe", "reference": "dense"}, {"arm": "mod", "reference": "dense"},
             {"arm": "probe", "reference": "probe-frozen"},
             {"best_of": ["threshold", "mor"], "reference": "dense", "label": "best other"}]


def synthetic_study(tmp_path, seeds=range(5), n_units=40, seed_sd=0.004, unit_sd=0.02):
    """Runs whose per-unit nats carry a known effect per arm (in bits/byte), a seed effect per run and a
    text effect per unit shared by every run; one units.csv per run directory."""
    rng = np.random.default_rng(1)
    unit_bytes = rng.integers(6000, 10000, n_units)
    text = rng.normal(0, unit_sd, n_units)
    rows = []
    for arm, effect in EFFECTS.items():
        for seed in seeds:
            run_dir = tmp_path / "runs" / "M" / arm / "shakespeare" / f"seed{seed}"
            run_dir.mkdir(parents=True)
            bpb = 1.6 + effect + text + rng.normal(0, seed_sd)
            bpb = bpb + rng.normal(0, 0.002, n_units)
            nats = bpb * unit_bytes * np.log(2)
            units = pd.DataFrame({"mode": "causal", "split": "test", "doc": 0, "segment": np.arange(n_units),
                                  "nats": nats, "tokens": unit_bytes // 4, "bytes": unit_bytes})
            val = units.assign(split="validation")
            pd.concat([units, val]).to_csv(run_dir / "units.csv", index=False)
            mean_bpb = float(nats.sum() / np.log(2) / unit_bytes.sum())
            rows.append({"model": "M", "dataset": "shakespeare", "variant": arm, "arm": arm, "seed": seed,
                         "mode": "causal", "val_bpb": mean_bpb, "test_bpb": mean_bpb,
                         "run_dir": str(run_dir)})
    runs = pd.DataFrame(rows)
    return runs, [r + "/units.csv" for r in runs["run_dir"]]


def test_primaries_are_holm_the_rest_bh_and_verdicts_follow_the_numbers(tmp_path):
    runs, paths = synthetic_study(tmp_path)
    table = run_hypotheses(runs, load_units(paths, runs), PRIMARIES, baseline="dense", mde_simulations=400)
    primary = table[table["family"] == "primary"].set_index("hypothesis")
    assert len(primary) == 4 and (primary["correction"] == "holm").all()
    assert (table.loc[table["family"] == "exploratory", "correction"] == "bh").all()
    # every other arm vs dense is exploratory; probe vs dense and mod vs dense are not repeated there
    assert set(table.loc[table["family"] == "exploratory", "arm"]) == {"probe-frozen", "threshold"}
    assert primary.loc["probe vs dense", "effect"] == pytest.approx(-0.05, abs=0.01)
    assert primary.loc["probe vs dense", "verdict"] == "better"
    assert primary.loc["probe vs probe-frozen", "verdict"] == "better"
    assert primary.loc["mod vs dense", "verdict"] == "no detectable difference"
    assert primary.loc["mod vs dense", "ci_low"] < 0 < primary.loc["mod vs dense", "ci_high"]
    best = primary.loc["best other"]
    assert best["arm"] == "mor" and best["candidates"] == 2  # lowest validation bits/byte of the two
    assert (primary["mde"] > 0).all() and (primary["p_adj"] >= primary["p"]).all()


def test_best_of_multiplies_its_p_values_by_the_number_of_candidates(tmp_path):
    runs, paths = synthetic_study(tmp_path)
    units = load_units(paths, runs)
    alone = run_hypotheses(runs, units, [{"arm": "mor", "reference": "dense"}], "dense", mde_simulations=200)
    picked = run_hypotheses(runs, units, [{"best_of": ["threshold", "mor"], "reference": "dense"}], "dense",
                            mde_simulations=200)
    a, b = alone.iloc[0], picked.iloc[0]
    assert b["arm"] == "mor" and b["p"] == pytest.approx(min(1.0, 2 * a["p"]))
    assert b["effect"] == pytest.approx(a["effect"])


def test_a_cell_without_the_baseline_is_not_compared(tmp_path):
    """Per-arm sweep windows leave sizes where only the routed arms ran: nothing to compare there."""
    runs, paths = synthetic_study(tmp_path, seeds=range(3))
    lone = runs[runs["arm"] != "dense"].assign(model="M2")
    table = run_hypotheses(pd.concat([runs, lone]), load_units(paths, runs).pipe(
        lambda u: pd.concat([u, u[u["arm"] != "dense"].assign(model="M2")])), [], baseline="dense",
        mde_simulations=100)
    assert set(table["model"]) == {"M"} and len(table) == len(EFFECTS) - 1


def test_unknown_arm_in_a_primary_is_one_clear_error(tmp_path):
    runs, paths = synthetic_study(tmp_path, seeds=range(2))
    with pytest.raises(HypothesisError, match="nope is not an arm"):
        run_hypotheses(runs, load_units(paths, runs), [{"arm": "nope", "reference": "dense"}], "dense")


def test_units_that_do_not_line_up_are_refused(tmp_path):
    runs, paths = synthetic_study(tmp_path, seeds=range(2))
    bad = pd.read_csv(paths[0])
    bad.loc[0, "nats"] = np.nan
    bad.to_csv(paths[0], index=False)
    with pytest.raises(HypothesisError, match="non-finite"):
        load_units(paths, runs)


def test_stats_command_writes_the_table_and_refuses_bad_input(tmp_path, capsys):
    runs, paths = synthetic_study(tmp_path, seeds=range(3))
    runs_csv, out = tmp_path / "runs.csv", tmp_path / "sub" / "stats.csv"
    runs.to_csv(runs_csv, index=False)
    args = ["--runs", str(runs_csv), "--out", str(out), "--units", *paths]
    assert main([*args, "--primaries", json.dumps(PRIMARIES[:2])]) == 0
    table = pd.read_csv(out)
    assert (table["family"] == "primary").sum() == 2 and "probe vs dense" in capsys.readouterr().out
    assert main([*args, "--primaries", "{not json"]) == 2
    assert "--primaries is not JSON" in capsys.readouterr().err
    bad_out = tmp_path / "x.csv"
    assert main(["--runs", str(runs_csv), "--out", str(bad_out), "--units", str(tmp_path / "no.csv")]) == 2
    assert "unit table not found" in capsys.readouterr().err and not bad_out.exists()
    assert main(["--runs", str(tmp_path / "absent.csv"), "--out", str(bad_out), "--units", *paths]) == 2
    assert not bad_out.exists() and not list(tmp_path.glob("*.tmp"))
