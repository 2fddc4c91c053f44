"""One isoFLOP budget: parabola fits of bits/byte against log parameters, and their paired bootstrap.

Chinchilla's approach 2 (as in Mixture-of-Depths, Fig. 3): at a fixed training budget each arm is trained at
K model sizes; its profile bpb(size) is fitted by a parabola in x = log10(N), N = parameters, whose minimum
is the arm's *frontier* (the best bpb this budget buys) at the optimal size N* = 10^x*. The minimum is only a
measurement when the sweep brackets it: the lowest mean point is neither the smallest nor the largest size,
and the fit is convex with its vertex inside the swept range. Otherwise the number is an extrapolation, and
the callers report "not bracketed" instead of it.

Unit of analysis: a training seed (shared by every arm and size of a budget: paired) crossed with a unit of
text (a test document, the same for every run of a dataset). Uncertainty, for the paper: "a crossed seed ×
document bootstrap-t with refitting": every resample applies the *same* resampled seeds and documents to
every arm and size of the budget and refits every parabola, so the variance of frontier differences keeps
the pairing. As in `study.hierarchical`, the variance has a seed term (all S^S seed resamples, enumerated
when S ≤ 5, text fixed, times S/(S−1)) and a text term (documents resampled, seeds fixed, times U'/(U'−1),
U' the Kish effective number); CI = estimate ± t_ν·se and p two-sided on ν Welch–Satterthwaite df with the
seed variance at its 75 % upper bound (`hierarchical._t_inference`). Document resampling alone also
varies the seed-specific document noise, which the seed term already holds; the text term keeps only the
share that is common to the seeds (the cross-seed covariance of the linearised per-seed statistics, as
`hierarchical` does for a mean). tests/study/test_isoflop.py checks coverage, the false-positive rate and
the power at the MDE by simulation. Inside a resample the statistic is the fitted minimum over the swept
range (the vertex when it is inside), which stays continuous where the vertex leaves the range; the share of
joint resamples that stay bracketed is reported.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats as sps

from . import hierarchical as hb

LN2 = hb.LN2
N_RESAMPLES = 2000  # document resamples (and seed resamples when S^S is too many to enumerate)
SEED_ENUMERATION = 4096  # enumerate every ordered seed resample up to this many (S ≤ 5)
POWER = 0.8
MIN_SIZES = 3
METHOD = "isoFLOP parabola in log N (Chinchilla approach 2); crossed seed×document bootstrap-t with refits"


def fit_parabola(x, y) -> np.ndarray:
    """Least-squares (a, b, c) of bpb = a + b·x + c·x², x = log10 N; x [..., K], y [..., K] → [..., 3]."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    design = np.stack([np.ones_like(x), x, x * x], -1)
    return (np.linalg.pinv(design) @ y[..., None])[..., 0]


def parabola(coef, x) -> np.ndarray:
    coef = np.asarray(coef, float)
    return coef[..., 0] + coef[..., 1] * x + coef[..., 2] * x * x


def fitted_minimum(coef, lo, hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bpb, x, interior) of the fitted parabola's minimum over [lo, hi]: the vertex when the fit is convex
    and the vertex lies inside, else the lower end point."""
    coef = np.asarray(coef, float)
    b, c = coef[..., 1], coef[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = -b / (2 * c)
    interior = (c > 0) & (vertex >= lo) & (vertex <= hi)
    end = np.where(parabola(coef, lo) <= parabola(coef, hi), lo, hi)
    x = np.where(interior, vertex, end)
    return parabola(coef, x), x, interior


def bracketed(x, y, coef) -> np.ndarray:
    """The sweep brackets the optimum: lowest mean point not at an end, convex fit, vertex in range."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    k = y.shape[-1]
    lowest = np.argmin(y, -1)
    _, _, interior = fitted_minimum(coef, x.min(-1), x.max(-1))
    return interior & (lowest > 0) & (lowest < k - 1) & (k >= MIN_SIZES)


def bracket_reason(x, y) -> str:
    """Why one profile does not bracket its optimum ('' when it does), for the tables."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(y) < MIN_SIZES:
        return f"fewer than {MIN_SIZES} sizes"
    order = np.argsort(x)
    lowest = int(np.argmin(y[order]))
    if lowest == 0:
        return "lowest bpb at the smallest size"
    if lowest == len(y) - 1:
        return "lowest bpb at the largest size"
    coef = fit_parabola(x, y)
    if coef[2] <= 0:
        return "fit not convex"
    _, _, interior = fitted_minimum(coef, x.min(), x.max())
    return "" if interior else "fitted optimum outside the sweep"


def _seed_counts(rng: np.random.Generator, n_seeds: int, n_resamples: int) -> tuple[np.ndarray, bool]:
    """Multiplicities [B, S] of the seed resamples: all S^S when few (exact), else `n_resamples` random."""
    if n_seeds**n_seeds <= SEED_ENUMERATION:
        tuples = np.array(list(itertools.product(range(n_seeds), repeat=n_seeds)))
        return (tuples[..., None] == np.arange(n_seeds)).sum(1).astype(float), True
    return hb._counts(rng, n_resamples, n_seeds), False


def per_seed_profiles(nats, unit_bytes, unit_counts=None) -> np.ndarray:
    """Each seed's Σ nats / (ln 2 Σ bytes) over the (resampled) units: [..., A, K, S, B] of nats
    [..., A, K, S, U] and unit multiplicities [..., B, U]; B = 1 when the units are not resampled."""
    nats, b = np.asarray(nats, float), np.asarray(unit_bytes, float)
    *lead, n_arms, n_sizes, n_seeds, n_units = nats.shape
    flat = nats.reshape(*lead, n_arms * n_sizes * n_seeds, n_units)
    if unit_counts is None:
        per_seed = flat.sum(-1, keepdims=True) / (LN2 * b.sum())
    else:
        per_seed = (flat @ np.swapaxes(unit_counts, -1, -2)) / (LN2 * (unit_counts @ b))[..., None, :]
    return per_seed.reshape(*lead, n_arms, n_sizes, n_seeds, -1)


def profiles(nats, unit_bytes, seed_counts=None, unit_counts=None, per_seed=None) -> np.ndarray:
    """Seed-mean bpb profiles [..., B, A, K] of nats [..., A, K, S, U]: each seed's ratio of sums over the
    (resampled) units, averaged over the (resampled) seeds. B = 1 when nothing is resampled."""
    if per_seed is None:
        per_seed = per_seed_profiles(nats, unit_bytes, unit_counts)
    n_seeds = per_seed.shape[-2]
    # seed weights [S, B] broadcast over the units' 1 or B resamples
    y = per_seed.mean(-2) if seed_counts is None else (per_seed * seed_counts.T).sum(-2) / n_seeds
    return np.moveaxis(y, -1, -3)


def _gradients(x, coef) -> np.ndarray:
    """d statistic / d profile [..., J, A, K] at the fit (the delta method): the fitted minimum is
    (1, x*, x*²)·P·y (P: the least-squares map; x* moving does not change it to first order), and an interior
    vertex −b/2c moves by (0, −1/2c, −x*/c)·P·dy; a clamped one does not move."""
    x, coef = np.asarray(x, float), np.asarray(coef, float)
    pinv = np.linalg.pinv(np.stack([np.ones_like(x), x, x * x], -1))  # [A, 3, K]
    _, xm, interior = fitted_minimum(coef, x.min(-1), x.max(-1))
    grad_f = np.einsum("...ai,aik->...ak", np.stack([np.ones_like(xm), xm, xm * xm], -1), pinv)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = coef[..., 2]
        dx = np.stack([np.zeros_like(c), -0.5 / c, -xm / c], -1)
    dx = np.where(interior[..., None], dx, 0.0)
    grad_x = np.einsum("...ai,aik->...ak", dx, pinv)
    eye = np.eye(x.shape[0])[:, :, None]  # statistic a depends on arm a only
    g_f, g_x = eye * grad_f[..., None, :, :], eye * grad_x[..., None, :, :]
    return np.concatenate([g_f, g_x, g_f[..., 1:, :, :] - g_f[..., :1, :, :],
                           g_x[..., 1:, :, :] - g_x[..., :1, :, :]], -3)


def _text_share(gradients, per_seed) -> np.ndarray:
    """Share of the unit-resampling variance that is text common to every seed [..., J]: the mean cross-seed
    covariance of the linearised per-seed statistics over their variance of the mean (as in
    `hierarchical`), which keeps seed-specific document noise, already in the seed term, out of the text."""
    n_seeds = per_seed.shape[-2]
    if n_seeds < 2:
        return np.full(gradients.shape[:-2], np.nan)
    lin = np.einsum("...jak,...aksb->...bjs", gradients, per_seed)
    lin = lin - lin.mean(-3, keepdims=True)
    cov = np.einsum("...bjs,...bjt->...jst", lin, lin) / (lin.shape[-3] - 1)
    total = cov.sum((-1, -2))
    cross = (total - np.trace(cov, axis1=-2, axis2=-1)) / (n_seeds * (n_seeds - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, np.clip(cross / (total / n_seeds**2), 0.0, 1.0), 1.0)


def _statistics(x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per arm of profiles y [..., A, K]: the stacked statistics [..., 2A + 2(A−1)] (frontier per arm,
    log10 N* per arm, then each arm − arm 0 in both), whether each arm is bracketed, and the fits."""
    coef = fit_parabola(x, y)
    f, xm, _ = fitted_minimum(coef, x.min(-1), x.max(-1))
    ok = bracketed(x, y, coef)
    stacked = np.concatenate([f, xm, f[..., 1:] - f[..., :1], xm[..., 1:] - xm[..., :1]], -1)
    return stacked, ok, coef


def estimate(nats, unit_bytes, log_n, level: float = 0.95, n_resamples: int = N_RESAMPLES,
             seed: int = 0) -> dict[str, np.ndarray]:
    """Frontiers, optimal sizes and their differences from arm 0 (the reference) for one budget.

    `nats` [..., A, K, S, U] (arms × sizes × shared seeds × shared units; leading axes: independent
    studies, for simulations), `unit_bytes` [U], `log_n` [A, K] log10 parameters. Returns, with J = 4A − 2
    stacked statistics (see `_statistics`): `estimate`, `se`, `df`, `ci_low`, `ci_high`, `p` [..., J];
    `bracketed` [..., A] and `share_bracketed` [..., A] (over joint resamples); `coef` [..., A, 3];
    `profile` [..., A, K]; `n_seeds`, `u_eff`.
    """
    nats, b, x = np.asarray(nats, float), np.asarray(unit_bytes, float), np.asarray(log_n, float)
    if not (np.isfinite(nats).all() and np.isfinite(b).all() and np.isfinite(x).all()):
        raise ValueError("non-finite nats, bytes or parameter counts")
    if np.any(b <= 0):
        raise ValueError("unit bytes must be positive")
    *lead, n_arms, n_sizes, n_seeds, n_units = nats.shape
    if x.shape != (n_arms, n_sizes):
        raise ValueError(f"log_n {x.shape} must be [arms, sizes] = {(n_arms, n_sizes)}")
    rng = np.random.default_rng(seed)
    y0 = profiles(nats, b)[..., 0, :, :]
    point, ok, coef = _statistics(x, y0)
    k, exact = _seed_counts(rng, n_seeds, n_resamples)
    seed_stats = _statistics(x, profiles(nats, b, seed_counts=k))[0]
    n = hb._counts(rng, math.prod(lead) * n_resamples, n_units).reshape(*lead, n_resamples, n_units)
    resampled = per_seed_profiles(nats, b, n)
    unit_stats = _statistics(x, profiles(nats, b, per_seed=resampled))[0]
    share = _text_share(_gradients(x, coef), resampled)
    joint_ok = _statistics(x, profiles(nats, b, hb._counts(rng, n_resamples, n_seeds), per_seed=resampled))[1]
    u_eff = float(hb._kish(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        v_seed = seed_stats.var(-2, ddof=0 if exact else 1) * n_seeds / (n_seeds - 1) if n_seeds > 1 else (
            np.full(point.shape, np.nan))
        v_unit = unit_stats.var(-2, ddof=1) * share * (u_eff / (u_eff - 1) if u_eff > 1 else np.nan)
    out = hb._t_inference(point, v_seed, v_unit, n_seeds, u_eff, level)
    return {"estimate": point, **out, "bracketed": ok, "share_bracketed": joint_ok.mean(-2), "coef": coef,
            "profile": y0, "n_seeds": n_seeds, "u_eff": u_eff}


def minimal_detectable_effect(se, df, alpha: float, power: float = POWER) -> np.ndarray:
    """|effect| that a two-sided t-test at level `alpha` detects with probability `power`, from the
    bootstrap se on ν df: (t_{1−α/2,ν} + t_{power,ν})·se (≈ 2.8·se for α = 0.05 and large ν).

    An approximation that treats se as known: with 3 seeds (ν ≈ 3) the se is itself noisy and the power at
    this effect measured ~0.65, not 0.8 (tests/study/test_isoflop.py), so read it as a lower bound."""
    se, df = np.asarray(se, float), np.asarray(df, float)
    with np.errstate(invalid="ignore"):
        return (sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se
