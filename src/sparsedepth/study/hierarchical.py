"""Arm − baseline in bits per byte, with the two sources of variance: training seeds and sampled text.

Every arm shares its S seeds with the baseline and is scored on the same U units of text, so seeds and units
are *crossed*: the per-unit bpb difference is r[s,u] = effect + a_s + c_u + e_su, and the text effect c_u is
common to all seeds. The estimate mean_s D_s (D_s: one seed's summed nats over summed bytes) therefore has
variance Var(D_s)/S + Var(Σ_u w_u c_u), w_u the byte share of unit u; a seed-level t-test sees only the
first term.

Method, for the paper: "a crossed seed×unit bootstrap-t with Welch–Satterthwaite degrees of freedom". The
seed term is the bootstrap variance of the seed-resampled mean of D_s, times S/(S−1) to undo the plug-in
bias; the text term is the mean between-seed covariance of the per-seed statistics under a unit resample
shared by all seeds (which keeps seed-specific unit noise, already in the seed term, out of it), times
U'/(U'−1) with U' the effective (Kish) number of units. The CI is effect ± t_ν·se and p is two-sided from
effect/se on ν degrees of freedom: Welch–Satterthwaite pooling S−1 and U'−1, with the seed variance taken at
its 75% upper confidence bound (plain Satterthwaite is anti-conservative for S ≤ 3). t_{S−1} alone is far
too conservative when text variance dominates, and a percentile bootstrap over 5 seeds under-covers.
Resampling units independently within each resampled seed (a nested scheme) is wrong here: it treats the
shared text variance as seed-specific and divides it by S. tests/study/test_hierarchical.py checks the
false-positive rate, coverage and power by simulation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import stats as sps

LN2 = math.log(2.0)
METHOD = "crossed seed×unit bootstrap-t (Satterthwaite df)"
N_RESAMPLES = 4000
DF_GUARD = 0.25  # the df use the seed variance at its 75% upper confidence bound
MEAN_UNIT_BYTES = 8000.0  # ~2048 tokens at ~4 bytes per token


def _inputs(arm_nats, base_nats, unit_bytes) -> tuple[np.ndarray, np.ndarray]:
    """The paired difference [..., S, U] in nats and the bytes [..., U], checked against each other."""
    arm, base = np.asarray(arm_nats, float), np.asarray(base_nats, float)
    b = np.asarray(unit_bytes, float)
    if arm.shape != base.shape or arm.ndim < 2:
        raise ValueError(f"arm {arm.shape} and base {base.shape} must be the same [..., seeds, units] shape")
    if b.shape[-1] != arm.shape[-1] or np.any(b <= 0):
        raise ValueError(f"unit_bytes {b.shape} must be positive, one per unit ({arm.shape[-1]})")
    return arm - base, b


def _per_seed(diff: np.ndarray, b: np.ndarray) -> np.ndarray:
    return diff.sum(-1) / (LN2 * b.sum(-1)[..., None])


def per_seed_bpb_difference(arm_nats, base_nats, unit_bytes) -> np.ndarray:
    """Σ_u (arm − base) nats / (ln 2 · Σ_u bytes) for each seed: the paired per-seed difference in bpb."""
    return _per_seed(*_inputs(arm_nats, base_nats, unit_bytes))


def bpb_difference(arm_nats, base_nats, unit_bytes) -> float:
    """The effect: the mean over seeds of the per-seed bpb difference (negative = the arm is better)."""
    return float(per_seed_bpb_difference(arm_nats, base_nats, unit_bytes).mean(-1))


def _kish(b: np.ndarray) -> np.ndarray:
    """Effective number of units: unequal sizes make the text term behave like fewer, equal ones."""
    return b.sum(-1) ** 2 / (b**2).sum(-1)


def _components(diff: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Moment estimates behind the analytic se, vectorised over leading (study) axes."""
    n_seeds = diff.shape[-2]
    w = b / b.sum(-1)[..., None]
    r = diff / (LN2 * b[..., None, :])  # per-unit bpb difference
    d = _per_seed(diff, b)
    x = r - d[..., None]
    u_eff = _kish(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        # mean over seed pairs s≠s' of x_su·x_s'u: the text effect, free of seed-specific unit noise
        cross = (x.sum(-2) ** 2 - (x**2).sum(-2)) / (n_seeds * (n_seeds - 1))
        v_unit = np.maximum((w**2 * cross).sum(-1), 0.0) * u_eff / (u_eff - 1)
        v_seed = d.var(-1, ddof=1) / n_seeds if n_seeds > 1 else np.full(d.shape[:-1], np.nan)
        z = x - x.mean(-2, keepdims=True)  # seed×unit interaction residual
        v_noise = (w**2 * (z**2).sum(-2)).sum(-1) / (n_seeds - 1)
    return {"effect": d.mean(-1), "v_seed": v_seed, "v_unit": v_unit, "v_noise": v_noise, "d": d,
            "u_eff": u_eff}


def _t_inference(effect, v_seed, v_unit, n_seeds: int, u_eff, level: float) -> dict[str, np.ndarray]:
    """CI and two-sided p from effect/se on Satterthwaite df; se = 0 gives p 1 (no effect) or 0, not NaN."""
    effect, v_seed, v_unit = np.broadcast_arrays(*(np.asarray(v, float) for v in (effect, v_seed, v_unit)))
    u_eff = np.broadcast_to(np.asarray(u_eff, float), effect.shape)
    var = v_seed + v_unit
    se = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        # the seed variance enters the df at its upper confidence bound: with S−1 = 1..4 df it is often
        # underestimated, and plain Satterthwaite then inflates the df exactly when t is inflated
        v_guard = v_seed * (n_seeds - 1) / sps.chi2.ppf(DF_GUARD, n_seeds - 1) if n_seeds > 1 else v_seed
        denom = v_guard**2 / (n_seeds - 1) + np.where(v_unit > 0, v_unit**2 / (u_eff - 1), 0.0)
        df = np.where(var > 0, (v_guard + v_unit) ** 2 / denom, n_seeds - 1.0)
        t = np.abs(effect) / se
    ok = np.isfinite(se) & (n_seeds > 1) & (u_eff > 1)
    df = np.where(ok, df, np.nan)
    half = np.where(se > 0, sps.t.ppf(0.5 + level / 2, df) * se, 0.0)
    p = np.where(se > 0, 2 * sps.t.sf(t, df), (effect == 0).astype(float))
    nan = np.full(effect.shape, np.nan)
    return {"se": np.where(ok, se, nan), "df": df, "ci_low": np.where(ok, effect - half, nan),
            "ci_high": np.where(ok, effect + half, nan), "p": np.where(ok, p, nan)}


def analytic_test(arm_nats, base_nats, unit_bytes, level: float = 0.95) -> dict[str, np.ndarray]:
    """The test of `compare` with the bootstrap variances replaced by their closed forms (the delta method).

    Vectorised over leading axes (many simulated studies at once); used by the simulations, where a bootstrap
    per study would be too slow. Agrees with the bootstrap se to Monte Carlo error (tested).
    """
    diff, b = _inputs(arm_nats, base_nats, unit_bytes)
    c = _components(diff, b)
    out = _t_inference(c["effect"], c["v_seed"], c["v_unit"], diff.shape[-2], c["u_eff"], level)
    return {"effect": c["effect"], **out}


def _counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """Multiplicities of `rows` independent resamples of n items with replacement, as a [rows, n] array."""
    idx = rng.integers(0, n, (rows, n)) + n * np.arange(rows)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(float)


def hierarchical_bootstrap(diff_nats, unit_bytes, n_resamples: int = N_RESAMPLES, seed: int = 0,
                           shared_units: bool = True) -> dict[str, np.ndarray]:
    """Paired two-stage bootstrap of the [S, U] arm − base nats: seeds with replacement, then units.

    Returns `seed_means` [B] (seeds resampled, text fixed), `per_seed` [B, S] (each seed's ratio-of-sums on
    resampled text) and `replicates` [B] (both stages). With `shared_units` (the right choice: the text is the
    same for every seed) one unit resample serves all seeds of a replicate; otherwise each resampled seed gets
    its own (the nested scheme, kept to show that it understates the text variance).
    """
    diff, b = np.asarray(diff_nats, float), np.asarray(unit_bytes, float)
    n_seeds, n_units = diff.shape
    rng = np.random.default_rng(seed)
    d = _per_seed(diff, b)
    k = _counts(rng, n_resamples, n_seeds)
    if shared_units:
        n = _counts(rng, n_resamples, n_units)
        per_seed = (n @ diff.T) / (LN2 * (n @ b))[:, None]
        replicates = (k * per_seed).sum(1) / n_seeds
    else:
        slots = rng.integers(0, n_seeds, (n_resamples, n_seeds))
        n = _counts(rng, n_resamples * n_seeds, n_units).reshape(n_resamples, n_seeds, n_units)
        per_seed = (n * diff).sum(-1) / (LN2 * (n @ b))
        replicates = ((n * diff[slots]).sum(-1) / (LN2 * (n @ b))).mean(1)
    return {"seed_means": k @ d / n_seeds, "per_seed": per_seed, "replicates": replicates}


def _seed_t_test(d: np.ndarray) -> float:
    """Seed-level paired t-test on the per-seed differences (ignores text variance); defined edge cases."""
    if d.size < 2:
        return math.nan
    if np.ptp(d) == 0:
        return 1.0 if d[0] == 0 else 0.0
    return float(sps.ttest_1samp(d, 0.0).pvalue)


def compare(arm_nats, base_nats, unit_bytes, level: float = 0.95, n_resamples: int = N_RESAMPLES,
            seed: int = 0) -> dict[str, float | int | str]:
    """Arm vs baseline: effect in bpb (negative = better), bootstrap-t CI and p, seed-level t-test p_t.

    The CI and p are NaN for one seed or one unit (no variance to estimate); the effect is always defined.
    """
    diff, b = _inputs(arm_nats, base_nats, unit_bytes)
    if diff.ndim != 2:
        raise ValueError(f"compare takes one study, [seeds, units]; got {diff.shape}")
    n_seeds, n_units = diff.shape
    c = _components(diff, b)
    u_eff = float(_kish(b))
    if n_seeds > 1:
        boot = hierarchical_bootstrap(diff, b, n_resamples, seed)
        v_seed = boot["seed_means"].var(ddof=1) * n_seeds / (n_seeds - 1)
        cov = np.cov(boot["per_seed"], rowvar=False)
        v_unit = max((cov.sum() - np.trace(cov)) / (n_seeds * (n_seeds - 1)), 0.0)
        v_unit *= u_eff / (u_eff - 1) if u_eff > 1 else math.nan
    else:
        v_seed = v_unit = math.nan
    out = _t_inference(c["effect"], v_seed, v_unit, n_seeds, u_eff, level)
    analytic = _t_inference(c["effect"], c["v_seed"], c["v_unit"], n_seeds, u_eff, level)
    base_bpb = float(np.asarray(base_nats, float).sum(-1).mean() / (LN2 * b.sum()))
    effect = float(c["effect"])
    return {
        "effect": effect, "ci_low": float(out["ci_low"]), "ci_high": float(out["ci_high"]),
        "p": float(out["p"]), "se": float(out["se"]), "df": float(out["df"]),
        "se_analytic": float(analytic["se"]),
        "se_seed": math.sqrt(v_seed), "se_text": math.sqrt(v_unit), "p_t": _seed_t_test(c["d"]),
        "n_seeds": n_seeds, "n_units": n_units, "method": METHOD, "level": level,
        "baseline_bpb": base_bpb, "rel_effect": effect / base_bpb if base_bpb else math.nan,
    }


def variance_components(arm_nats, base_nats, unit_bytes) -> dict[str, float]:
    """Standard deviations (bpb) of the model r[s,u] = effect + a_s + c_u + e_su, truncated at 0.

    `sd_seed`: between-seed sd of D_s once the seed-specific unit noise it averages is removed;
    `sd_unit`: sd of the text effect c_u and `sd_noise` of e_su, both for a unit of `mean_unit_bytes`
    (a unit's sd is taken to scale as 1/sqrt(bytes), which makes the byte weighting exact);
    `sd_seed_observed`: sample sd of D_s.
    """
    diff, b = _inputs(arm_nats, base_nats, unit_bytes)
    if diff.ndim != 2:
        raise ValueError(f"variance_components takes one study, [seeds, units]; got {diff.shape}")
    n_seeds, n_units = diff.shape
    c = _components(diff, b)
    var_d = float(c["v_seed"]) * n_seeds
    v_noise = float(c["v_noise"])
    return {
        "sd_seed": math.sqrt(max(var_d - v_noise, 0.0)) if n_seeds > 1 else math.nan,
        "sd_unit": math.sqrt(n_units * float(c["v_unit"])) if n_seeds > 1 else math.nan,
        "sd_noise": math.sqrt(max(n_units * v_noise, 0.0)) if n_seeds > 1 else math.nan,
        "sd_seed_observed": math.sqrt(var_d) if n_seeds > 1 else math.nan,
        "n_seeds": n_seeds, "n_units": n_units, "mean_unit_bytes": float(b.mean()),
    }


def simulate_units(rng: np.random.Generator, n_seeds: int, n_units: int, effect: float, sigma_seed: float,
                   sigma_unit: float, unit_bytes=None, baseline_bpb: float = 1.5, *,
                   sigma_noise: float | None = None,
                   n_studies: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic (arm_nats, base_nats, unit_bytes) from r[s,u] = effect + a_s + c_u + e_su (bpb per unit).

    a_s ~ N(0, sigma_seed²); c_u (shared by all seeds: the same text) and e_su (seed×unit noise, sd
    `sigma_noise`, default sigma_unit) have sd sigma·sqrt(mean bytes / bytes_u), as longer units average more
    text. Bytes default to a gamma draw around 8000 (cv 0.5). `n_studies` prepends that many independent
    studies on the same units, for vectorised simulations.
    """
    if unit_bytes is None:
        unit_bytes = np.maximum(np.round(rng.gamma(4.0, MEAN_UNIT_BYTES / 4.0, n_units)), 64.0)
    b = np.asarray(unit_bytes, float)
    if b.shape != (n_units,):
        raise ValueError(f"unit_bytes {b.shape} must have one entry per unit ({n_units})")
    lead = () if n_studies is None else (n_studies,)
    scale = np.sqrt(b.mean() / b)
    noise = sigma_unit if sigma_noise is None else sigma_noise
    r = (effect + sigma_seed * rng.standard_normal(lead + (n_seeds, 1))
         + sigma_unit * scale * rng.standard_normal(lead + (1, n_units))
         + noise * scale * rng.standard_normal(lead + (n_seeds, n_units)))
    difficulty = 0.2 * scale * rng.standard_normal(lead + (1, n_units)) + 0.01 * rng.standard_normal(
        lead + (n_seeds, 1))
    base = LN2 * b * (baseline_bpb + difficulty)
    return base + LN2 * b * r, base, b


def minimal_detectable_effect(components: Mapping[str, float], n_seeds: int, n_units: int,
                              alpha: float = 0.05, power: float = 0.8, n_sim: int = 4000, seed: int = 0,
                              unit_bytes=None) -> float:
    """Smallest |effect| (bpb) that the `compare` test at level `alpha` detects with probability ≥ `power`.

    Simulates `n_sim` null studies from `components` (keys sd_seed, sd_unit, sd_noise as returned by
    `variance_components`; sd_noise defaults to 0) with the analytic form of the test, then bisects on the
    effect: a shift changes only the estimate, not its se or df, so one simulation serves every candidate.
    Pass the multiplicity-corrected alpha (e.g. Holm's α/m for m primaries). NaN for fewer than 2 seeds.
    """
    if n_seeds < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    arm, base, b = simulate_units(rng, n_seeds, n_units, 0.0, components["sd_seed"], components["sd_unit"],
                                  unit_bytes, sigma_noise=components.get("sd_noise", 0.0), n_studies=n_sim)
    res = analytic_test(arm, base, b, level=1 - alpha)
    e0, halfwidth = res["effect"], res["ci_high"] - res["effect"]  # reject iff |effect| > t_crit·se

    def detected(delta: float) -> float:
        return float(np.mean(np.abs(e0 + delta) > halfwidth))

    lo, hi = 0.0, float(np.nanmax(halfwidth)) + float(np.max(np.abs(e0))) + 1e-12
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if detected(mid) >= power else (mid, hi)
    return hi


DECIDED = ("better", "worse")  # the verdicts that are decisions (not: no detectable difference, not tested)


def verdict(effect: float, ci_low: float, ci_high: float, p_adj: float, alpha: float = 0.05) -> str:
    """"better" (lower bpb) or "worse" when the adjusted p clears alpha, "not tested" without a p (e.g. one
    seed: nothing to test with), else "no detectable difference"."""
    if math.isnan(p_adj) or math.isnan(effect):
        return "not tested"
    if not p_adj < alpha or effect == 0:
        return "no detectable difference"
    return "better" if effect < 0 else "worse"
