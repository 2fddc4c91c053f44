"""The tidy table `results/runs.csv`: one row per finished run × inference mode (docs/CONTRACT.md).

    python -m sparsedepth.study.aggregate --out results/runs.csv RUN_DIR...
    python -m sparsedepth.study.aggregate --out results/runs.csv --root results/runs

Why a separate step: statistics, figures, tables and the notebook read this one table, never the run
directories, so they need neither torch nor the run layout. `model` and `variant` come from the run
directory's path (`study.layout`), everything else from its JSON files; a path that disagrees with its
config.json is an error, so a mis-wired workflow cannot mislabel a run. A run that is missing a file or
whose losses are not finite (it diverged) is an error too, and nothing is written: a table that silently
dropped a seed would let the paper claim more seeds than it used.

A column `lm_eval_bpb`, after `test_bpb`, appears when some run has its independent second measurement
(lm-evaluation-harness on the same test documents: `lm_eval.json` from the workflow's optional `lm_eval`
rule), on the row of the inference mode it scored; empty where there is none, or where lm_eval.json
predates the run's weights (a stale file is not this run's).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ..atomic import write_csv
from .layout import LayoutError, find_run_dirs, parse_run_dir
from .results import arm_name

EXIT_USER_ERROR = 2

RUNS_COLUMNS = [
    "model", "variant", "arm", "router", "dataset", "seed", "capacity", "mode", "n_layers", "d_model",
    "n_params", "steps", "batch_size", "seq_len", "train_tokens", "tokens_per_param", "epochs", "val_loss",
    "val_ppl", "val_bpb", "test_loss", "test_ppl", "test_tokens", "test_split_tokens",
    "test_bpb", "layers_per_token", "flops_per_token", "dense_flops_per_token", "counted_flops_per_token",
    "train_flops", "planned_train_flops", "train_tokens_per_s", "causality_violation", "batch_leak",
    "run_dir",
]
SORT_KEYS = ["model", "dataset", "variant", "mode", "seed"]
LM_EVAL_COLUMN = "lm_eval_bpb"  # after test_bpb, only in a table where some run has lm_eval.json


class AggregateError(ValueError):
    """A run directory that cannot be tabulated; the message names it."""


def _read_json(run_dir: Path, name: str) -> dict:
    path = run_dir / name
    if not path.is_file():
        hint = " (evaluate the run first)" if name == "eval.json" else " (the run did not finish)"
        raise AggregateError(f"{run_dir}: missing {name}{hint}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AggregateError(f"{path}: not valid JSON: {e}") from None


def model_and_variant(run_dir: Path) -> tuple[str, str]:
    """`model` and `variant` of a run directory (its path is the only place they are recorded)."""
    try:
        key = parse_run_dir(run_dir)
    except LayoutError as e:
        raise AggregateError(str(e)) from None
    return key.model, key.variant


FINITE_FIELDS = ("loss", "bpb", "layers_per_token", "flops_per_token")


def _check_finite(run_dir: Path, summary: dict, evaluation: dict) -> None:
    """A diverged run (a NaN or inf loss) is refused here, naming the run and the value."""
    values = {"summary.json final_train_loss": summary.get("final_train_loss"),
              "summary.json val_loss": summary.get("val_loss")}
    for mode, entry in evaluation.get("modes", {}).items():
        for split in ("validation", "test"):
            for field in FINITE_FIELDS:
                values[f"eval.json {mode}/{split}/{field}"] = entry.get(split, {}).get(field)
    for where, value in values.items():
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value)):
            raise AggregateError(f"{run_dir}: {where} is {value} (the run diverged or its evaluation "
                                 "failed; rerun it)")


def lm_eval_bpb(run_dir: Path) -> tuple[str | None, float | None]:
    """(mode, bits per byte) of the run's lm_eval.json; (None, None) without a current one."""
    path, weights = run_dir / "lm_eval.json", run_dir / "model.safetensors"
    if not path.is_file():
        return None, None
    if weights.is_file() and path.stat().st_mtime < weights.stat().st_mtime:
        print(f"warning: {path} is older than the run's weights; lm_eval_bpb left empty", file=sys.stderr)
        return None, None
    result = _read_json(run_dir, "lm_eval.json")
    value = result.get("bits_per_byte")
    if not (isinstance(value, int | float) and math.isfinite(value)):
        raise AggregateError(f"{path}: bits_per_byte is {value} (rerun the lm_eval rule)")
    return result.get("mode", "causal"), float(value)


def run_rows(run_dir: str | Path) -> list[dict]:
    """The rows of one run directory, one per inference mode in its eval.json."""
    run_dir = Path(run_dir)
    parts = run_dir.parts
    model, variant = model_and_variant(run_dir)
    config, summary, evaluation = (_read_json(run_dir, f"{n}.json") for n in ("config", "summary", "eval"))
    _check_finite(run_dir, summary, evaluation)
    harness_mode, harness_bpb = lm_eval_bpb(run_dir)
    try:
        if (config["dataset"], f"seed{config['seed']}") != (parts[-2], parts[-1]):
            raise AggregateError(f"{run_dir}: path says {parts[-2]}/{parts[-1]} but config.json says "
                                 f"{config['dataset']}/seed{config['seed']}")
        tokens = config["steps"] * config["batch_size"] * config["seq_len"]
        rows = []
        for mode, entry in evaluation["modes"].items():
            val, test = entry["validation"], entry["test"]
            rows.append({
                "model": model, "variant": variant, "arm": arm_name(variant, mode),
                "router": config["router"],
                "dataset": config["dataset"], "seed": config["seed"], "capacity": config["capacity"],
                "mode": mode, "n_layers": config["model"]["n_layers"], "d_model": config["model"]["d_model"],
                "n_params": summary["n_params"], "steps": config["steps"], "batch_size": config["batch_size"],
                "seq_len": config["seq_len"], "train_tokens": tokens,
                "tokens_per_param": tokens / summary["n_params"],
                # passes over the training split (older runs, without its size: empty)
                "epochs": (tokens / summary["train_split_tokens"]) if summary.get("train_split_tokens")
                else None,
                "val_loss": val["loss"], "val_ppl": val["ppl"],
                "val_bpb": val.get("bpb"), "test_loss": test["loss"], "test_ppl": test["ppl"],
                "test_tokens": test.get("n_tokens"), "test_split_tokens": test.get("split_tokens"),
                "test_bpb": test.get("bpb"),
                "layers_per_token": val["layers_per_token"], "flops_per_token": val["flops_per_token"],
                "dense_flops_per_token": val["dense_flops_per_token"],
                "counted_flops_per_token": entry["counted_flops_per_token"],
                # what the run spent (counted by the training loop); older runs: the evaluated estimate
                "train_flops": summary.get("train_flops", entry["train_flops_per_token"] * tokens),
                "planned_train_flops": summary.get("planned_train_flops"),
                "train_tokens_per_s": summary["train_tokens_per_s"],
                "causality_violation": entry["causality_violation"], "batch_leak": entry["batch_leak"],
                "run_dir": str(run_dir),
            })
            if harness_mode is not None:
                rows[-1][LM_EVAL_COLUMN] = harness_bpb if mode == harness_mode else None
    except (KeyError, TypeError) as e:
        raise AggregateError(f"{run_dir}: config/summary/eval JSON lacks field {e}") from None
    if not rows:
        raise AggregateError(f"{run_dir}: eval.json has no inference modes")
    return rows


CURVES_COLUMNS = ["model", "variant", "dataset", "seed", "step", "steps", "train_flops", "val_loss",
                  "run_dir"]


def curve_rows(run_dir: str | Path) -> list[dict]:
    """The learning curve of one run: each in-training validation of metrics.jsonl with the training FLOPs
    spent by then (steps and FLOPs differ between arms under a compute budget; fractions do not)."""
    run_dir = Path(run_dir)
    model, variant = model_and_variant(run_dir)
    config = _read_json(run_dir, "config.json")
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise AggregateError(f"{run_dir}: missing metrics.jsonl (the run did not train here)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise AggregateError(f"{path}:{n}: not valid JSON: {e}") from None
        if "val_loss" in record:
            if not (isinstance(record["val_loss"], int | float) and math.isfinite(record["val_loss"])):
                raise AggregateError(f"{path}:{n}: val_loss is {record['val_loss']} (the run diverged)")
            rows.append({"model": model, "variant": variant, "dataset": config["dataset"],
                         "seed": config["seed"], "step": record["step"], "steps": config["steps"],
                         "train_flops": record.get("train_flops"), "val_loss": record["val_loss"],
                         "run_dir": str(run_dir)})
    return rows


def collect_curves(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    rows = [row for run_dir in run_dirs for row in curve_rows(run_dir)]
    table = pd.DataFrame(rows, columns=CURVES_COLUMNS)
    keys = ["model", "dataset", "variant", "seed", "step"]
    return table.sort_values(keys, kind="stable", ignore_index=True)


def collect_runs(runs: Iterable[str | Path] | str | Path) -> pd.DataFrame:
    """The tidy table of the given run directories (or of every run under a root directory), sorted by
    model, dataset, variant, mode, seed so the same runs always give the same file."""
    if isinstance(runs, str | Path):
        try:
            run_dirs = find_run_dirs(runs)
        except LayoutError as e:
            raise AggregateError(str(e)) from None
    else:
        run_dirs = [Path(r) for r in runs]
    rows = [row for run_dir in run_dirs for row in run_rows(run_dir)]
    columns = list(RUNS_COLUMNS)
    if any(LM_EVAL_COLUMN in row for row in rows):
        columns.insert(columns.index("test_bpb") + 1, LM_EVAL_COLUMN)
    table = pd.DataFrame(rows, columns=columns)
    dupes = table[table.duplicated(["model", "variant", "dataset", "seed", "mode"], keep=False)]
    if not dupes.empty:
        raise AggregateError(f"the same run appears twice: {', '.join(sorted(set(dupes['run_dir'])))}")
    return table.sort_values(SORT_KEYS, kind="stable", ignore_index=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsedepth.study.aggregate",
                                description="Tabulate evaluated run directories into results/runs.csv.")
    p.add_argument("run_dirs", nargs="*", help="run directories: results/runs/MODEL/VARIANT/DATASET/seedN")
    p.add_argument("--root", help="instead of listing them: every run directory under this root")
    p.add_argument("--out", required=True, help="where to write the CSV, e.g. results/runs.csv")
    p.add_argument("--curves", help="also write the runs' learning curves (metrics.jsonl) to this CSV")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if bool(args.root) == bool(args.run_dirs):
            raise AggregateError("give either run directories or --root, not both or neither")
        table = collect_runs(args.root if args.root else args.run_dirs)
        if table.empty:
            raise AggregateError(f"no run directories under {args.root}")
        curves = collect_curves(sorted(set(table["run_dir"]))) if args.curves else None
    except AggregateError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    out = write_csv(table, args.out)
    print(f"wrote {out}: {len(table)} rows from {table['run_dir'].nunique()} runs")
    if curves is not None:
        print(f"wrote {write_csv(curves, args.curves)}: {len(curves)} validation points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
