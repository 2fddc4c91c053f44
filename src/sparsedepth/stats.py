"""Statistics of the study: the command that tests its hypotheses, and seed-level paired tests.

    python -m sparsedepth.stats --runs results/runs.csv --units RUN_DIR/units.csv ... \\
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
import pandas as pd
from scipy import stats as sps

from .atomic import write_csv

EXIT_USER_ERROR = 2
BOOTSTRAP_SEED = 0
N_RESAMPLES = 9999
CORRECTIONS = ("holm", "bh")

STATS_COLUMNS = [
    "metric", "baseline", "n_seeds", "baseline_mean", "arm_mean", "mean_diff", "ci_low", "ci_high",
    "ci_method", "cohen_dz", "p_t", "p_wilcoxon", "p_holm", "p_wilcoxon_holm", "correction", "p_adj",
    "p_wilcoxon_adj",
]


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


def compare_to_baseline(runs: pd.DataFrame, metric: str, baseline: str = "dense",
                        cell: Sequence[str] = ("model", "dataset"), by: str = "arm",
                        correction: str = "holm") -> pd.DataFrame:
    """One row per (cell…, arm ≠ baseline): the arm against the baseline on the seeds both have.

    The family for the adjusted p-values is every row of this metric (all cells × arms). `p_holm` and
    `p_wilcoxon_holm` are always Holm (docs/CONTRACT.md); `p_adj`/`p_wilcoxon_adj` use `correction`.
    Cells without the baseline are skipped with a warning."""
    cell = list(cell)
    keys = [*cell, by, "seed"]
    missing = [c for c in [*keys, metric] if c not in runs.columns]
    if missing:
        raise ValueError(f"runs table lacks column(s) {', '.join(missing)}")
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; use one of {', '.join(CORRECTIONS)}")
    dupes = runs[runs.duplicated(keys, keep=False)]
    if not dupes.empty:
        first = dict(zip(keys, dupes.iloc[0][keys], strict=True))
        raise ValueError(f"runs table has {len(dupes)} rows sharing {'/'.join(keys)}, e.g. {first}")
    rows = []
    for cell_key, group in runs.groupby(cell, sort=True):
        cell_key = dict(zip(cell, cell_key, strict=True))
        base = group.loc[group[by] == baseline].set_index("seed")[metric].dropna()
        if base.empty:
            warnings.warn(f"no {baseline!r} runs with {metric} in cell {cell_key}: cell skipped",
                          stacklevel=2)
            continue
        for arm, g in group[group[by] != baseline].groupby(by, sort=True):
            vals = g.set_index("seed")[metric].dropna()
            seeds = sorted(set(base.index) & set(vals.index))
            test = paired_test(base.loc[seeds].to_numpy(), vals.loc[seeds].to_numpy())
            rows.append({**cell_key, by: arm, "metric": metric, "baseline": baseline, "n_seeds": len(seeds),
                         "baseline_mean": base.loc[seeds].mean(), "arm_mean": vals.loc[seeds].mean(),
                         **{k: v for k, v in test.items() if k != "n"}})
    out = pd.DataFrame(rows, columns=[*cell, by, *STATS_COLUMNS])
    out["p_holm"] = adjust(out["p_t"], "holm")
    out["p_wilcoxon_holm"] = adjust(out["p_wilcoxon"], "holm")
    out["correction"] = correction
    out["p_adj"] = adjust(out["p_t"], correction)
    out["p_wilcoxon_adj"] = adjust(out["p_wilcoxon"], correction)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sparsedepth.stats",
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

    from .study.hypotheses import HypothesisError, load_units, run_hypotheses

    args = parser().parse_args(argv)
    try:
        if not Path(args.runs).is_file():
            raise ValueError(f"runs table not found: {args.runs}")
        try:
            runs = pd.read_csv(args.runs)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read {args.runs} as CSV: {e}") from None
        try:
            primaries = json.loads(args.primaries)
        except json.JSONDecodeError as e:
            raise ValueError(f"--primaries is not JSON: {e}") from None
        missing = [u for u in args.units if not Path(u).is_file()]
        if missing:
            raise ValueError(f"unit table not found: {missing[0]}")
        units = load_units(args.units, runs)
        table = run_hypotheses(runs, units, primaries, baseline=args.baseline, split=args.split,
                               unit=args.unit, alpha=args.alpha)
    except (ValueError, HypothesisError) as e:
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
