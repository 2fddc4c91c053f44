"""The study's hypotheses: declared primary comparisons (Holm) and every other arm (exploratory, BH).

Why declare: a family of every arm × cell × metric is mostly controls, and correcting over it hides the few
comparisons the study exists to answer. The grid config names its primaries (`primaries:`); Holm corrects
over those alone, and each gets an effect in bits per byte, a 95 % CI and p-value from the paired
hierarchical bootstrap over seeds and documents (`study.hierarchical`), the seed-level t-test beside it as
the conservative check, the minimal detectable effect at 80 % power, and a verdict chosen by code.

A primary is `{arm: A, reference: B}` or `{best_of: [A1, A2, ...], reference: B}`: the candidate with the
lowest mean *validation* bits/byte is selected, then tested on the evaluation split with its p-values
multiplied by the number of candidates (Bonferroni over the selection), so choosing the best arm cannot
manufacture a discovery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..units import UNIT_COLUMNS
from . import hierarchical as hb
from .results import arm_name
from .stats import adjust

ALPHA = 0.05
POWER = 0.8
MIN_DOCUMENTS = 30  # fewer documents in a split than this: resample contiguous segments instead
UNIT_KEYS = ("model", "dataset", "variant", "seed", "mode")

HYPOTHESIS_COLUMNS = [
    "model", "dataset", "hypothesis", "family", "arm", "reference", "candidates", "split", "unit",
    "n_seeds", "n_units", "reference_bpb", "arm_bpb", "effect", "rel_effect", "ci_low", "ci_high", "se",
    "p", "p_adj", "p_t", "p_t_adj", "correction", "mde", "rel_mde", "sd_seed", "sd_unit", "verdict",
    "method",
]


class HypothesisError(ValueError):
    """A primary that names an unknown arm, or unit tables that do not line up; the message says which."""


def load_units(paths: Iterable[str | Path], runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's per-unit table (`units.csv` beside its eval.json), keyed by the run's model, variant,
    dataset and seed as runs.csv records them (matched by run directory)."""
    keys = runs.drop_duplicates("run_dir").set_index("run_dir")
    frames = []
    for path in paths:
        path = Path(path)
        run_dir = str(path.parent)
        if run_dir not in keys.index:
            raise HypothesisError(f"{path}: its run directory is not in the runs table")
        frame = pd.read_csv(path)
        missing = {"mode", "split", *UNIT_COLUMNS} - set(frame.columns)
        if missing:
            raise HypothesisError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        if not np.isfinite(frame["nats"]).all():
            raise HypothesisError(f"{path}: non-finite nats")
        row = keys.loc[run_dir]
        for key in ("model", "dataset", "variant", "seed"):
            frame[key] = row[key]
        frames.append(frame)
    if not frames:
        raise HypothesisError("no unit tables given")
    units = pd.concat(frames, ignore_index=True)
    units["arm"] = [arm_name(v, m) for v, m in zip(units["variant"], units["mode"], strict=True)]
    return units


def unit_kind(units: pd.DataFrame, split: str, unit: str = "auto") -> str:
    """`doc` where the split has enough documents to resample, else contiguous `segment`s (a block
    bootstrap: the shakespeare splits hold a few whole plays)."""
    if unit != "auto":
        return {"document": "doc", "segment": "segment"}.get(unit, unit)
    n_docs = units[units["split"] == split].groupby(list(UNIT_KEYS))["doc"].nunique().min()
    return "doc" if n_docs >= MIN_DOCUMENTS else "segment"


def paired_matrices(units: pd.DataFrame, cell: dict, arm: str, reference: str, split: str,
                    kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """[S, U] nats of `arm` and `reference` on their shared seeds, and the [U] bytes of each unit."""
    in_cell = units[(units["model"] == cell["model"]) & (units["dataset"] == cell["dataset"])
                    & (units["split"] == split)]

    def pivot(name: str, column: str) -> pd.DataFrame:
        rows = in_cell[in_cell["arm"] == name]
        return rows.groupby(["seed", kind])[column].sum().unstack(kind)

    a, b = pivot(arm, "nats"), pivot(reference, "nats")
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        raise HypothesisError(f"{cell}: {arm} and {reference} share no seed")
    a, b = a.loc[seeds], b.loc[seeds]
    if list(a.columns) != list(b.columns) or a.isna().any().any() or b.isna().any().any():
        raise HypothesisError(f"{cell}: {arm} and {reference} were not evaluated on the same {kind}s")
    unit_bytes = pivot(reference, "bytes").loc[seeds]
    if not (unit_bytes.nunique(axis=0) == 1).all():
        raise HypothesisError(f"{cell}: {reference}'s runs disagree on the bytes of a {kind}")
    return a.to_numpy(float), b.to_numpy(float), unit_bytes.iloc[0].to_numpy(float), seeds


def _test(units, cell, arm, reference, split, kind, seed) -> dict:
    arm_nats, ref_nats, unit_bytes, _ = paired_matrices(units, cell, arm, reference, split, kind)
    result = hb.compare(arm_nats, ref_nats, unit_bytes, seed=seed)
    components = hb.variance_components(arm_nats, ref_nats, unit_bytes)
    reference = result["baseline_bpb"]  # the effect is a difference of ratios over the same bytes
    return {**result, "arm_bpb": reference + result["effect"], "reference_bpb": reference,
            "components": components, "unit_bytes": unit_bytes}


def _select(runs: pd.DataFrame, cell: dict, candidates: Sequence[str], selection_metric: str) -> str | None:
    """The candidate with the lowest mean selection metric (validation bits/byte) in the cell."""
    in_cell = runs[(runs["model"] == cell["model"]) & (runs["dataset"] == cell["dataset"])
                   & runs["arm"].isin(candidates)]
    means = in_cell.groupby("arm")[selection_metric].mean().dropna()
    return None if means.empty else str(means.idxmin())


def _label(spec: dict) -> str:
    if "label" in spec:
        return spec["label"]
    arm = spec.get("arm", "best of " + ", ".join(spec.get("best_of", [])))
    return f"{arm} vs {spec['reference']}"


def run_hypotheses(runs: pd.DataFrame, units: pd.DataFrame, primaries: Sequence[dict], baseline: str,
                    split: str = "test", unit: str = "auto", selection_metric: str = "val_bpb",
                    alpha: float = ALPHA, seed: int = 0, mde_simulations: int = 2000) -> pd.DataFrame:
    """One row per hypothesis and cell: every declared primary where its arms exist, then every other arm
    against `baseline` (exploratory) where the baseline ran (an isoFLOP sweep's per-arm windows leave
    sizes without it). Columns: HYPOTHESIS_COLUMNS."""
    kind = unit_kind(units, split, unit)
    arms = set(runs["arm"])
    for spec in primaries:
        named = [spec.get("arm"), spec["reference"], *spec.get("best_of", [])]
        unknown = [a for a in named if a is not None and a not in arms]
        if unknown:
            raise HypothesisError(f"primaries: {', '.join(unknown)} is not an arm of this study "
                                  f"(arms: {', '.join(sorted(arms))})")
    rows, covered = [], set()
    cells = runs[["model", "dataset"]].drop_duplicates().sort_values(["model", "dataset"])
    for cell in cells.to_dict("records"):
        here = (runs["model"] == cell["model"]) & (runs["dataset"] == cell["dataset"])
        in_cell = set(runs.loc[here, "arm"])
        for spec in primaries:
            candidates = [a for a in spec.get("best_of", [spec.get("arm")]) if a in in_cell]
            if spec["reference"] not in in_cell or not candidates:
                continue
            arm = candidates[0] if "arm" in spec else _select(runs, cell, candidates, selection_metric)
            if arm is None:
                continue
            rows.append({**cell, "hypothesis": _label(spec), "family": "primary", "arm": arm,
                         "reference": spec["reference"], "candidates": len(candidates)})
            covered.add((cell["model"], cell["dataset"], arm, spec["reference"]))
        for arm in sorted(in_cell - {baseline}) if baseline in in_cell else []:  # per-arm sweep windows
            if (cell["model"], cell["dataset"], arm, baseline) not in covered:
                rows.append({**cell, "hypothesis": f"{arm} vs {baseline}", "family": "exploratory",
                             "arm": arm, "reference": baseline, "candidates": 1})
    table = pd.DataFrame(rows, columns=["model", "dataset", "hypothesis", "family", "arm", "reference",
                                        "candidates"])
    results = []
    for i, row in enumerate(table.to_dict("records")):
        r = _test(units, row, row["arm"], row["reference"], split, kind, seed + i)
        k = row["candidates"]
        results.append({**row, "split": split, "unit": "document" if kind == "doc" else "segment",
                        "n_seeds": r["n_seeds"], "n_units": r["n_units"], "reference_bpb": r["reference_bpb"],
                        "arm_bpb": r["arm_bpb"], "effect": r["effect"], "rel_effect": r["rel_effect"],
                        "ci_low": r["ci_low"], "ci_high": r["ci_high"], "se": r["se"],
                        "p": float(np.minimum(1.0, k * r["p"])),  # NaN (one seed) stays NaN
                        "p_t": float(np.minimum(1.0, k * r["p_t"])), "method": r["method"],
                        "sd_seed": r["components"]["sd_seed"],
                        "sd_unit": r["components"]["sd_unit"], "_components": r["components"],
                        "_bytes": r["unit_bytes"]})
    out = pd.DataFrame(results)
    if out.empty:
        return pd.DataFrame(columns=HYPOTHESIS_COLUMNS)
    out["p_adj"], out["p_t_adj"], out["correction"] = np.nan, np.nan, ""
    for family, method in (("primary", "holm"), ("exploratory", "bh")):
        sel = out["family"] == family
        if sel.any():
            out.loc[sel, "p_adj"] = adjust(out.loc[sel, "p"], method)
            out.loc[sel, "p_t_adj"] = adjust(out.loc[sel, "p_t"], method)
            out.loc[sel, "correction"] = method
    n_primary = int((out["family"] == "primary").sum())
    out["mde"] = np.nan
    for i in out.index[out["family"] == "primary"]:
        row = out.loc[i]
        level = alpha / (n_primary * row["candidates"])  # Holm's strictest step, and the selection
        out.loc[i, "mde"] = hb.minimal_detectable_effect(
            row["_components"], int(row["n_seeds"]), int(row["n_units"]), alpha=level, power=POWER,
            n_sim=mde_simulations, seed=seed + i, unit_bytes=row["_bytes"])
    out["rel_mde"] = out["mde"] / out["reference_bpb"]
    out["verdict"] = [hb.verdict(e, lo, hi, p, alpha) for e, lo, hi, p in
                      zip(out["effect"], out["ci_low"], out["ci_high"], out["p_adj"], strict=True)]
    return out[HYPOTHESIS_COLUMNS].reset_index(drop=True)
