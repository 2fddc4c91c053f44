"""Known-answer tests of the seed×unit comparison, by simulation with fixed RNG seeds.

Rates are checked against binomial error: with 10000 studies the sd of a 5% rate is 0.2%, so the ±2% bands are
~9 sd wide and the RNG seeds below are not tuned to pass.
"""

import math
import time

import numpy as np
import pytest
from scipy import stats as sps

from sparsedepth.study.hierarchical import (
    LN2,
    METHOD,
    analytic_test,
    bpb_difference,
    compare,
    hierarchical_bootstrap,
    minimal_detectable_effect,
    per_seed_bpb_difference,
    simulate_units,
    variance_components,
    verdict,
)

# (sigma_seed, sigma_unit) in bpb; the seed×unit noise defaults to sigma_unit. With S=5, U=65 these put the
# seed share of the variance of the effect near 1/2, 1/6 and 98%.
SCENARIOS = {"both": (0.004, 0.015), "units_dominate": (0.0005, 0.03), "seeds_dominate": (0.02, 0.01)}
N_STUDIES = 10000


def _null_rates(scenario: str, n_seeds: int = 5, n_units: int = 65, seed: int = 11) -> tuple[float, float]:
    """False-positive rates at α = 0.05 of the hierarchical test and of the seed-level t-test."""
    arm, base, b = simulate_units(np.random.default_rng(seed), n_seeds, n_units, 0.0, *SCENARIOS[scenario],
                                  n_studies=N_STUDIES)
    p = analytic_test(arm, base, b)["p"]
    p_t = sps.ttest_1samp(per_seed_bpb_difference(arm, base, b), 0.0, axis=-1).pvalue
    return float(np.mean(p < 0.05)), float(np.mean(p_t < 0.05))


def test_bpb_difference_matches_hand_computation():
    arm = np.array([[10.0, 20.0, 30.0], [12.0, 18.0, 33.0]])
    base = np.array([[9.0, 21.0, 28.0], [12.0, 17.0, 30.0]])
    unit_bytes = np.array([5.0, 7.0, 8.0])
    seed0 = (1.0 - 1.0 + 2.0) / (math.log(2) * 20.0)
    seed1 = (0.0 + 1.0 + 3.0) / (math.log(2) * 20.0)
    assert per_seed_bpb_difference(arm, base, unit_bytes) == pytest.approx([seed0, seed1])
    assert bpb_difference(arm, base, unit_bytes) == pytest.approx((seed0 + seed1) / 2)
    out = compare(arm, base, unit_bytes, n_resamples=200)
    assert out["effect"] == pytest.approx((seed0 + seed1) / 2)
    assert out["baseline_bpb"] == pytest.approx((58.0 + 59.0) / 2 / (math.log(2) * 20.0))
    assert out["rel_effect"] == pytest.approx(out["effect"] / out["baseline_bpb"])


def test_identical_arms_give_zero_effect_and_p_one():
    base = np.random.default_rng(0).uniform(100, 200, (5, 30))
    out = compare(base, base.copy(), np.full(30, 400.0))
    assert out["effect"] == 0.0 and out["p"] == 1.0 and out["p_t"] == 1.0
    assert out["ci_low"] == out["ci_high"] == 0.0
    assert verdict(out["effect"], out["ci_low"], out["ci_high"], out["p"]) == "no detectable difference"


def test_single_seed_defines_the_effect_but_not_the_inference():
    arm, base, b = simulate_units(np.random.default_rng(1), 1, 40, -0.02, 0.01, 0.02)
    out = compare(arm, base, b)
    assert out["effect"] == pytest.approx(bpb_difference(arm, base, b)) and math.isfinite(out["effect"])
    assert all(math.isnan(out[k]) for k in ("ci_low", "ci_high", "p", "se", "p_t"))
    assert out["n_seeds"] == 1 and verdict(out["effect"], out["ci_low"], out["ci_high"], out["p"]) == (
        "not tested")
    assert math.isnan(minimal_detectable_effect({"sd_seed": 0.01, "sd_unit": 0.02}, 1, 40))


@pytest.mark.parametrize("n_seeds", [2, 3])
def test_few_seeds_give_defined_numbers(n_seeds):
    arm, base, b = simulate_units(np.random.default_rng(2), n_seeds, 40, -0.02, 0.01, 0.02)
    out = compare(arm, base, b)
    for key in ("effect", "ci_low", "ci_high", "p", "se", "df", "p_t", "baseline_bpb", "rel_effect"):
        assert math.isfinite(out[key]), key
    assert out["ci_low"] < out["effect"] < out["ci_high"] and 0 < out["p"] <= 1
    assert out["df"] >= n_seeds - 1 and out["method"] == METHOD


def test_compare_is_fast_and_agrees_with_its_closed_form():
    arm, base, b = simulate_units(np.random.default_rng(3), 5, 500, 0.0, 0.01, 0.02)
    start = time.perf_counter()
    out = compare(arm, base, b)
    assert time.perf_counter() - start < 1.0
    assert out["se"] == pytest.approx(out["se_analytic"], rel=0.05)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_bootstrap_se_matches_the_analytic_fast_path(scenario):
    """Licenses the closed form used in the simulations: within 10% of the 4000-resample bootstrap se."""
    rng = np.random.default_rng(4)
    ratios = []
    for n_seeds, n_units in [(5, 65), (3, 20), (5, 300), (2, 65)]:
        arm, base, b = simulate_units(rng, n_seeds, n_units, 0.01, *SCENARIOS[scenario])
        out = compare(arm, base, b, seed=n_units)
        ratios.append(out["se"] / out["se_analytic"])
    assert np.allclose(ratios, 1.0, atol=0.10), ratios


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_false_positive_rate_is_nominal_under_the_null(scenario):
    fpr, _ = _null_rates(scenario)
    print(f"{scenario}: FPR {fpr:.4f}")
    assert 0.03 <= fpr <= 0.07


@pytest.mark.parametrize("n_seeds", [2, 3])
def test_few_seeds_are_not_anti_conservative(n_seeds):
    """The df guard keeps S = 2, 3 at or below nominal (plain Satterthwaite reached ~10% at S = 2)."""
    for scenario in SCENARIOS:
        fpr, _ = _null_rates(scenario, n_seeds=n_seeds, seed=12)
        print(f"S={n_seeds} {scenario}: FPR {fpr:.4f}")
        assert 0.02 <= fpr <= 0.065, scenario


def test_seed_level_t_test_ignores_unit_variance():
    """Shared text effects do not vary across seeds, so the per-seed t-test cannot see them; ours can."""
    fpr, fpr_t = _null_rates("units_dominate")
    print(f"units dominate: hierarchical FPR {fpr:.4f}, seed-level t-test FPR {fpr_t:.4f}")
    assert fpr_t > 0.15
    assert 0.03 <= fpr <= 0.07


def test_ci_covers_a_known_effect_with_the_full_bootstrap():
    """End to end through `compare` (400 resamples per study): the 95% CI covers the true effect ~95%."""
    rng = np.random.default_rng(5)
    effect = -0.01
    arm, base, b = simulate_units(rng, 5, 65, effect, *SCENARIOS["both"], n_studies=2000)
    covered = [(o := compare(arm[i], base[i], b, n_resamples=400, seed=i))["ci_low"] <= effect <= o["ci_high"]
               for i in range(len(arm))]
    coverage = float(np.mean(covered))
    print(f"coverage {coverage:.4f}")
    assert 0.93 <= coverage <= 0.97


def test_nested_unit_resampling_understates_text_variance():
    """Why units are resampled once per replicate for all seeds: the text is the same in every seed."""
    rng = np.random.default_rng(6)
    sd_seed, sd_unit, sd_noise, n_seeds, n_units = 0.0005, 0.03, 0.005, 5, 65
    arm, base, b = simulate_units(rng, n_seeds, n_units, 0.0, sd_seed, sd_unit, sigma_noise=sd_noise,
                                  n_studies=200)
    # exact under the simulation's 1/sqrt(bytes) scaling, whatever the unit sizes
    true_var = sd_seed**2 / n_seeds + sd_unit**2 / n_units + sd_noise**2 / (n_seeds * n_units)
    shared, nested = (
        np.mean([hierarchical_bootstrap(d, b, 500, seed=i, shared_units=flag)["replicates"].var()
                 for i, d in enumerate(arm - base)]) / true_var
        for flag in (True, False))
    print(f"bootstrap variance / true variance: shared {shared:.2f}, nested {nested:.2f}")
    assert 0.8 < shared < 1.25 and nested < 0.4


def test_variance_components_recover_the_simulation():
    arm, base, b = simulate_units(np.random.default_rng(7), 20, 500, 0.01, 0.01, 0.03, sigma_noise=0.02)
    comp = variance_components(arm, base, b)
    assert comp["sd_seed"] == pytest.approx(0.01, rel=0.4)
    assert comp["sd_unit"] == pytest.approx(0.03, rel=0.15)
    assert comp["sd_noise"] == pytest.approx(0.02, rel=0.1)
    assert comp["sd_seed_observed"] >= comp["sd_seed"]
    flat = variance_components(*simulate_units(np.random.default_rng(8), 5, 65, 0.0, 0.0, 0.0,
                                               sigma_noise=0.0))
    assert all(flat[k] >= 0 for k in ("sd_seed", "sd_unit", "sd_noise", "sd_seed_observed"))


def test_power_at_the_minimal_detectable_effect_is_the_target():
    """Checked with a fresh simulation through `compare` itself (bootstrap), at a Holm-corrected α/3."""
    comp = {"sd_seed": 0.01, "sd_unit": 0.02, "sd_noise": 0.02}
    alpha = 0.05 / 3
    unit_bytes = np.random.default_rng(9).gamma(4.0, 2000.0, 65).round()
    mde = minimal_detectable_effect(comp, 5, 65, alpha=alpha, unit_bytes=unit_bytes)
    arm, base, b = simulate_units(np.random.default_rng(10), 5, 65, -mde, comp["sd_seed"], comp["sd_unit"],
                                  unit_bytes, sigma_noise=comp["sd_noise"], n_studies=1000)
    power = float(np.mean([compare(arm[i], base[i], b, n_resamples=400, seed=i)["p"] < alpha
                           for i in range(len(arm))]))
    print(f"MDE {mde:.4f} bpb, power there {power:.3f}")
    assert abs(power - 0.8) <= 0.07


def test_minimal_detectable_effect_falls_with_more_seeds():
    comp = {"sd_seed": 0.01, "sd_unit": 0.02, "sd_noise": 0.02}
    mdes = [minimal_detectable_effect(comp, s, 65, n_sim=2000) for s in (2, 3, 5, 10)]
    print("MDE by seeds 2,3,5,10:", [round(m, 4) for m in mdes])
    assert all(a > b for a, b in zip(mdes, mdes[1:], strict=False))
    # the text term does not shrink with seeds: the MDE stays above its floor 2.8·sd_unit/√U
    assert mdes[-1] > 2.8 * comp["sd_unit"] / math.sqrt(65)


def test_verdict_reads_the_sign_only_when_significant():
    assert verdict(-0.01, -0.02, -0.005, 0.01) == "better"
    assert verdict(0.01, 0.005, 0.02, 0.01) == "worse"
    assert verdict(-0.01, -0.02, 0.001, 0.2) == "no detectable difference"
    assert verdict(-0.01, -0.02, -0.005, 0.01, alpha=0.005) == "no detectable difference"
    assert verdict(0.01, math.nan, math.nan, math.nan) == "not tested"  # e.g. one seed: no p at all
    assert verdict(math.nan, math.nan, math.nan, math.nan) == "not tested"


def test_simulated_bytes_and_nats_are_consistent():
    arm, base, b = simulate_units(np.random.default_rng(13), 4, 50, 0.0, 0.0, 0.0, sigma_noise=0.0,
                                  baseline_bpb=1.2, n_studies=3)
    assert arm.shape == base.shape == (3, 4, 50) and b.shape == (50,) and np.all(b > 0)
    assert np.allclose(arm, base)
    assert base.sum(-1).mean() / (LN2 * b.sum()) == pytest.approx(1.2, rel=0.05)
