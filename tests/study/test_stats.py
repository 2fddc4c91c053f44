"""Paired tests against known answers, corrections against hand computation and scipy."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from sparsedepth.study.stats import adjust, paired_test


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
