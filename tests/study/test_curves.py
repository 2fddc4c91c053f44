"""Learning curves against training FLOPs, and the equal-steps view read off them (no extrapolation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparsedepth.study.curves import curve_points, equal_steps, format_equal_steps


def curves() -> pd.DataFrame:
    rows = []
    for variant, steps, per_step in (("dense", 300, 1.0), ("mod", 450, 2 / 3), ("early_exit", 240, 1.25)):
        for seed in (0, 1):
            for k in range(1, 7):  # six validations at the same fractions of every arm's budget
                step = round(steps * k / 6)
                rows.append({"model": "M", "variant": variant, "dataset": "d", "seed": seed, "step": step,
                             "steps": steps, "train_flops": step * per_step * 1e9,
                             "val_loss": 6.0 - np.log(step) / 2 + 0.01 * seed, "run_dir": "x"})
    return pd.DataFrame(rows)


def test_points_pair_validations_by_their_fraction_of_the_budget():
    points = curve_points(curves())
    dense, mod = (points[points["variant"] == v] for v in ("dense", "mod"))
    assert len(dense) == len(mod) == 6
    np.testing.assert_allclose(dense["train_flops"].to_numpy(), mod["train_flops"].to_numpy(), rtol=0.01)
    assert (points["n_seeds"] == 2).all()


def test_equal_steps_interpolates_at_dense_steps_and_never_extrapolates():
    table = equal_steps(curves(), "dense").set_index("arm")
    expected = 6.0 - np.log(300) / 2 + 0.005
    assert table.loc["dense", "val_loss"] == pytest.approx(expected)
    assert table.loc["mod", "steps"] == 300 and table.loc["mod", "arm_steps"] == 450
    assert table.loc["mod", "val_loss"] == pytest.approx(expected, abs=0.01)  # linear between 225 and 300
    assert np.isnan(table.loc["early_exit", "val_loss"])  # 240 steps: no point at 300
    tex = format_equal_steps(equal_steps(curves(), "dense"), "dense")
    assert "tab:equal-steps" in tex and "n/a" in tex


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="train_flops"):
        curve_points(curves().drop(columns="train_flops"))
