"""Reading the tidy results (runs, stats, bench, curves) that tables, figures and the notebook start from.

Why strict: a diverged or half-evaluated run must stop the analysis, not vanish from it, or the paper would
report a number over fewer seeds than it says. A file that was named but is missing, empty or holds a
non-finite metric is one `ResultsError` naming the file, the run and the value; a file that was not named
is an empty table, and the outputs then say the data is absent ("not measured"), never a made-up value.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

CAUSAL = "causal"
DENSE_ROUTER = "dense"  # the router every benchmark row is timed against (bench.py), not a grid arm

# Columns that must be finite in every row: a NaN or inf here means a run diverged or was cut short.
FINITE = {
    "runs": ("val_loss", "test_loss", "val_bpb", "test_bpb", "layers_per_token", "flops_per_token",
             "train_flops"),
    "curves": ("val_loss",),
    "bench": ("median_ms", "speedup"),
    "speculative": ("median_ms", "tokens_per_s", "speedup"),
    "stats": ("effect", "reference_bpb", "arm_bpb"),
}


class ResultsError(ValueError):
    """Inputs a table or figure cannot be made from; the message says which file and what is wrong."""


def arm_name(variant: str, mode: str) -> str:
    """The unit compared with the baseline: `mod` (causal inference) and `mod[topk]` are different arms."""
    return variant if mode == CAUSAL else f"{variant}[{mode}]"


def base_variant(arm: str) -> str:
    """`mod[topk]` → `mod`: the variant an arm was trained as."""
    return arm.split("[", 1)[0]


def arm_order(arms: Sequence[str], baseline: str | None = None) -> list[str]:
    """The baseline first, then alphabetical, each non-causal mode right after its causal arm."""
    return sorted(set(arms), key=lambda a: (a != baseline, base_variant(a), a))


def require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultsError(f"{what} lacks column(s) {', '.join(missing)} (see docs/CONTRACT.md)")


def ci_half_width(values: Sequence[float], level: float = 0.95) -> float:
    """Half-width of the Student-t confidence interval of the mean (NaN with fewer than two values)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return float("nan")
    return float(sps.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def read_csv(path: str | Path | None) -> pd.DataFrame:
    """A named CSV (which must exist and have at least a header), or an empty frame when none is named."""
    if path is None:
        return pd.DataFrame()
    if not Path(path).is_file():
        raise ResultsError(f"{path}: not found")
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ResultsError(f"{path}: empty file (no header; an interrupted write?)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: not a CSV table: {e}") from None


def check_finite(table: pd.DataFrame, kind: str, source: str | Path) -> pd.DataFrame:
    """`table` unchanged, or a ResultsError naming the first row (its run directory) with a non-finite
    value in one of `FINITE[kind]`."""
    for column in FINITE[kind]:
        if column not in table.columns or table.empty:
            continue
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = table.iloc[bad[0]]
            who = row["run_dir"] if "run_dir" in table.columns else f"row {bad[0] + 2}"
            more = f" (and {bad.size - 1} more rows)" if bad.size > 1 else ""
            raise ResultsError(f"{source}: {column} = {row[column]} for {who}{more}: a diverged or "
                               "unfinished run; rerun it or leave it out of the grid")
    return table


def load(path: str | Path | None, kind: str) -> pd.DataFrame:
    """`read_csv` + `check_finite` for one of the tidy tables (`runs`, `stats`, `bench`, `curves`)."""
    return check_finite(read_csv(path), kind, path)


def add_result_args(p: argparse.ArgumentParser, inputs: dict[str, str], baseline_help: str) -> None:
    """The input-table flags of a study command (each read only when given) and its required `--baseline`."""
    for flag, what in inputs.items():
        p.add_argument(f"--{flag}", help=f"(read only when given) {what}")
    p.add_argument("--baseline", required=True, help=f"{baseline_help} (the grid config's `baseline:`)")
