"""Paired tests against known answers, corrections against hand computation and scipy, and the CLI."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from sparsedepth.stats import STATS_COLUMNS, adjust, compare_to_baseline, paired_test

SEEDS = [0, 1, 2, 3, 4]


def test_constant_shift_with_small_noise_is_significant_and_ci_excludes_zero():
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 0.2, 5)
    result = paired_test(base, base + 0.5 + rng.normal(0, 0.02, 5))
    assert result["p_t"] < 0.05
    assert 0 < result["ci_low"] < 0.5 < result["ci_high"]
    assert result["ci_method"] == "BCa"
    assert result["mean_diff"] == pytest.approx(0.5, abs=0.05) and result["cohen_dz"] > 5
    assert result["p_wilcoxon"] == pytest.approx(2 / 2**5)  # exact: the smallest two-sided p with 5 pairs


def test_identical_runs_give_p_one_and_a_zero_ci():
    base = np.array([3.1, 3.0, 3.3, 2.9])
    result = paired_test(base, base.copy())
    assert (result["p_t"], result["p_wilcoxon"]) == (1.0, 1.0)
    assert (result["ci_low"], result["ci_high"], result["ci_method"]) == (0.0, 0.0, "constant")
    assert result["cohen_dz"] == 0.0


def test_tiny_samples_are_defined_not_errors():
    one = paired_test([1.0], [1.5])
    assert one["mean_diff"] == 0.5 and math.isnan(one["p_t"]) and math.isnan(one["p_wilcoxon"])
    assert one["ci_method"] == "none" and math.isnan(one["cohen_dz"])
    two = paired_test([1.0, 2.0], [1.1, 2.3])  # BCa needs ≥ 3 pairs: percentile, recorded
    assert two["ci_method"] == "percentile" and two["ci_low"] <= two["mean_diff"] <= two["ci_high"]
    assert 0 < two["p_t"] <= 1
    with pytest.raises(ValueError, match="equally long"):
        paired_test([1.0, 2.0], [1.0])


def test_paired_test_is_deterministic():
    a, b = [3.0, 3.2, 2.9, 3.1, 3.05], [3.1, 3.1, 3.0, 3.3, 3.0]
    assert paired_test(a, b) == paired_test(a, b)


def test_holm_matches_hand_computation():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → monotone 0.06
    np.testing.assert_allclose(adjust([0.01, 0.04, 0.03, 0.005], "holm"), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(adjust([0.5, 0.9], "holm"), [1.0, 1.0])  # capped at 1


def test_bh_matches_scipy_and_nans_pass_through_outside_the_family():
    p = [0.01, 0.04, 0.03, 0.005, 0.2]
    np.testing.assert_allclose(adjust(p, "bh"), sps.false_discovery_control(p, method="bh"))
    with_nan = adjust([0.01, math.nan, 0.04, 0.03, 0.005], "holm")
    assert math.isnan(with_nan[1])
    np.testing.assert_allclose(np.delete(with_nan, 1), [0.03, 0.06, 0.06, 0.02])
    with pytest.raises(ValueError, match="unknown correction"):
        adjust(p, "bonferroni")


def tidy(arms=("dense", "mod", "probe"),
         cells=(("tiny", "shakespeare"), ("tiny", "wikipedia"))) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    shift = {"dense": 0.0, "mod": 0.3, "probe": 0.0, "mod[topk]": -0.1}
    rows = []
    for model, dataset in cells:
        base = rng.normal(4.0, 0.1, len(SEEDS))
        for arm in arms:
            for seed, b in zip(SEEDS, base, strict=True):
                loss = b + shift[arm] + rng.normal(0, 0.01)
                rows.append({"model": model, "dataset": dataset, "arm": arm, "seed": seed,
                             "val_loss": loss, "test_loss": loss + 0.05})
    return pd.DataFrame(rows)


def test_compare_to_baseline_shape_columns_and_family_correction():
    out = compare_to_baseline(tidy(), "val_loss")
    assert list(out.columns) == ["model", "dataset", "arm", *STATS_COLUMNS]
    assert list(zip(out["dataset"], out["arm"], strict=True)) == [
        ("shakespeare", "mod"), ("shakespeare", "probe"), ("wikipedia", "mod"), ("wikipedia", "probe")]
    assert (out["n_seeds"] == 5).all() and (out["metric"] == "val_loss").all()
    mod = out[out["arm"] == "mod"]
    assert (mod["p_holm"] < 0.05).all() and (mod["ci_low"] > 0).all()
    np.testing.assert_allclose(out["mean_diff"], out["arm_mean"] - out["baseline_mean"])
    np.testing.assert_allclose(out["p_holm"], adjust(out["p_t"], "holm"))  # family = all 4 rows
    np.testing.assert_allclose(out["p_adj"], out["p_holm"])
    bh = compare_to_baseline(tidy(), "val_loss", correction="bh")
    np.testing.assert_allclose(bh["p_adj"], sps.false_discovery_control(bh["p_t"], method="bh"))
    pd.testing.assert_frame_equal(out, compare_to_baseline(tidy().sample(frac=1, random_state=3), "val_loss"))


def test_pairs_only_on_shared_seeds():
    runs = tidy()
    runs = runs[~((runs["arm"] == "mod") & (runs["seed"] == 4))]
    out = compare_to_baseline(runs, "val_loss")
    assert out.set_index(["dataset", "arm"]).loc[("shakespeare", "mod"), "n_seeds"] == 4


def test_cell_without_baseline_is_skipped_with_a_warning():
    runs = tidy()
    runs = runs[~((runs["dataset"] == "wikipedia") & (runs["arm"] == "dense"))]
    with pytest.warns(UserWarning, match="cell skipped"):
        out = compare_to_baseline(runs, "val_loss")
    assert set(out["dataset"]) == {"shakespeare"}


def test_duplicate_and_missing_columns_are_errors():
    runs = tidy()
    with pytest.raises(ValueError, match="sharing"):
        compare_to_baseline(pd.concat([runs, runs.iloc[:1]]), "val_loss")
    with pytest.raises(ValueError, match="lacks column"):
        compare_to_baseline(runs, "nope")
