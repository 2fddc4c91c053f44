"""Statistics of the study: the command that tests its hypotheses, and seed-level paired tests.

    python -m sparsedepth.study.stats --runs results/runs.csv --units RUN_DIR/units.csv ... \\
        --primaries '[{"arm": "probe", "reference": "dense"}]' --baseline dense --out results/stats.csv

The command tests the grid's declared primaries and every other arm in bits per byte, resampling seeds and
documents (`sparsedepth.study.hypotheses`). The seed-level helpers below (paired t / Wilcoxon, BCa CI,
Holm, BH) are scipy's; only Holm is a few lines of our own, as statsmodels is not a dependency. Tiny studies
(2 seeds, identical runs) give defined answers, not warnings.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats as sps

from ..atomic import write_csv

EXIT_USER_ERROR = 2
BOOTSTRAP_SEED = 0
N_RESAMPLES = 9999
CORRECTIONS = ("holm", "bh")

def _bootstrap_ci(diff: np.ndarray, level: float) -> tuple[float, float, str]:
    """BCa CI of the mean difference; percentile when BCa is undefined (n < 3 or it returns NaN);
    a point when all differences are equal (every resample has the same mean)."""
    if diff.size < 2:
        return math.nan, math.nan, "none"
    if np.all(diff == diff[0]):
        return float(diff[0]), float(diff[0]), "constant"
    for method in (("BCa",) if diff.size >= 3 else ()) + ("percentile",):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sps.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = sps.bootstrap((diff,), np.mean, n_resamples=N_RESAMPLES, confidence_level=level,
                               method=method, rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            return float(ci.low), float(ci.high), method
    return math.nan, math.nan, "none"


def paired_test(baseline: Sequence[float], arm: Sequence[float],
                level: float = 0.95) -> dict[str, float | str]:
    """Paired comparison of `arm` with `baseline` (aligned by seed); the difference is `arm − baseline`.

    Returns n, mean_diff, ci_low/ci_high (+ ci_method: BCa, percentile, constant or none), cohen_dz
    (mean / sd of the differences: 0 if all are 0, NaN if undefined) and p_t / p_wilcoxon (two-sided; 1 when
    all differences are 0, NaN with fewer than 2 pairs)."""
    a, b = np.asarray(baseline, dtype=float), np.asarray(arm, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and equally long, got {a.shape} and {b.shape}")
    diff = b - a
    n = diff.size
    mean = float(diff.mean()) if n else math.nan
    ci_low, ci_high, ci_method = _bootstrap_ci(diff, level)
    result: dict[str, float | str] = {"n": n, "mean_diff": mean, "ci_low": ci_low, "ci_high": ci_high,
                                      "ci_method": ci_method, "cohen_dz": math.nan, "p_t": math.nan,
                                      "p_wilcoxon": math.nan}
    if n < 2:
        return result
    sd = float(diff.std(ddof=1))
    if np.all(diff == 0):
        return {**result, "cohen_dz": 0.0, "p_t": 1.0, "p_wilcoxon": 1.0}
    result["cohen_dz"] = mean / sd if sd > 0 else math.nan
    with warnings.catch_warnings():  # constant non-zero differences: t = ±inf, p = 0 is the right limit
        warnings.simplefilter("ignore", RuntimeWarning)
        result["p_t"] = float(sps.ttest_rel(b, a).pvalue)
        result["p_wilcoxon"] = float(sps.wilcoxon(diff).pvalue)
    return result


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down: the i-th smallest of m p-values (from 0) times m − i, kept monotone, capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out


def adjust(pvalues: Sequence[float], method: str = "holm") -> np.ndarray:
    """Family-wise (Holm) or false-discovery-rate (BH, scipy's) adjustment. NaNs pass through and are not
    counted in the family size: a comparison that could not be tested is not a hypothesis tested."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; use one of {', '.join(CORRECTIONS)}")
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = holm(p[ok]) if method == "holm" else sps.false_discovery_control(p[ok], method="bh")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sparsedepth.study.stats",
        description="The study's hypotheses: declared primaries (Holm) and every other arm against the "
                    "baseline (exploratory, BH), in bits per byte, by a paired hierarchical bootstrap over "
                    "seeds and documents (sparsedepth.study.hypotheses).")
    p.add_argument("--runs", required=True, help="the tidy runs table, e.g. results/runs.csv")
    p.add_argument("--units", nargs="+", required=True,
                   help="the per-unit tables of the runs (RUN_DIR/units.csv, written by `evaluate --units`)")
    p.add_argument("--out", required=True, help="where to write the stats CSV")
    p.add_argument("--primaries", default="[]",
                   help='JSON list of primary comparisons: {"arm": A, "reference": B} or '
                        '{"best_of": [A, ...], "reference": B} (the grid config\'s `primaries:`)')
    p.add_argument("--baseline", default="dense", help="the arm every other arm is compared with")
    p.add_argument("--split", default="test", choices=["validation", "test"], help="the split tested")
    p.add_argument("--unit", default="auto", choices=["auto", "document", "segment"],
                   help="resampling unit within a seed (auto: documents when the split has >= 30)")
    p.add_argument("--alpha", type=float, default=0.05, help="level of every test, after correction")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import json

    from .hypotheses import load_units, run_hypotheses
    from .results import load

    args = parser().parse_args(argv)
    try:
        runs = load(args.runs, "runs")  # a named, complete runs table: no missing file, no diverged run
        if runs.empty:
            raise ValueError(f"{args.runs}: no runs")
        try:
            primaries = json.loads(args.primaries)
        except json.JSONDecodeError as e:
            raise ValueError(f"--primaries is not JSON: {e}") from None
        missing = [u for u in args.units if not Path(u).is_file()]
        if missing:
            raise ValueError(f"unit table not found: {missing[0]}")
        given = {str(Path(u).parent) for u in args.units}
        unscored = sorted(set(runs["run_dir"].astype(str)) - given)
        if unscored:
            raise ValueError(f"{len(unscored)} run(s) of {args.runs} have no --units table: "
                             f"{', '.join(unscored)}")
        units = load_units(args.units, runs)
        table = run_hypotheses(runs, units, primaries, baseline=args.baseline, split=args.split,
                               unit=args.unit, alpha=args.alpha)
    except ValueError as e:  # HypothesisError and ResultsError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    out = write_csv(table, args.out)
    primary = table[table["family"] == "primary"]
    print(f"wrote {out}: {len(table)} hypotheses, {len(primary)} primary")
    for row in primary.itertuples():
        print(f"  {row.model}/{row.dataset} {row.hypothesis}: {row.arm} {row.effect:+.4f} bpb "
              f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}] p_holm={row.p_adj:.3g} MDE={row.mde:.4f} "
              f"-> {row.verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
