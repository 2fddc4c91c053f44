"""The paper's figures from the command line: each as PDF + PNG from exactly the files its rule declares.

    python -m sparsedepth.study.figures NAME --runs results/runs.csv --curves results/curves.csv \\
        --bench results/bench/bench.csv --baseline dense --out results/figures/NAME.pdf

NAME is one of `FIGURES`. Per-token figures (layers_hist, routing_map, attention) load the run directories
the given runs table lists (`study.probes`); the others plot the tables (`study.plots`; `isoflop` and
`frontier`: `study.frontier_plots`, from study.frontier's CSVs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import matplotlib
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from . import plots
from .results import ResultsError, add_result_args, load, read_csv

EXIT_USER_ERROR = 2
EXIT_RUNTIME_ERROR = 1


def _run_cell(args, variants: Sequence[str] | None = None):
    """One run per variant in one cell, from the run directories the given runs table lists (never a
    directory scan: a run left over from another grid is not this study's)."""
    from . import probes  # torch: only the per-token figures load it

    runs = load(args.runs, "runs")
    if runs.empty:
        raise ResultsError(f"{args.name} needs --runs (the runs table listing the trained runs)")
    return probes.pick_runs(probes.runs_in_table(runs), args.model, args.dataset, variants)


def _layers_hist(args) -> Figure:
    from . import probes

    model, dataset, runs = _run_cell(args)
    return plots.plot_layers_hist(probes.layers_samples(runs, args.max_batches), args.baseline,
                                  f"{model} / {dataset}, validation" if runs else None)


def _routing_map(args) -> Figure:
    from . import probes

    wanted = args.variants.split(",")
    model, dataset, runs = _run_cell(args, wanted)
    missing = [v for v in wanted if v not in runs]
    if not runs:
        return plots.message_figure(f"no run of {', '.join(wanted)} in {args.runs}")
    return plots.plot_routing_map(probes.routing_maps(runs, args.tokens, args.start), missing,
                                  f"{model} / {dataset}: routing on the start of the validation split "
                                  "(* = routed block)")


def _attention(args) -> Figure:
    from . import probes

    candidates = [args.variant] if args.variant else ["mod", "probe", "threshold"]
    reasons = []
    for variant in candidates:
        model, dataset, runs = _run_cell(args, [variant])
        if not runs:
            reasons.append(f"{variant}: no run in {args.runs}")
            continue
        try:
            att, tokens = probes.attention_for_run(runs[variant], variant, args.tokens, args.start,
                                                   args.layer, args.mode)
        except probes.ProbeError as e:  # e.g. a tiny model whose routed blocks gather < 2 of these tokens
            reasons.append(f"{variant}: {e}")
            continue
        return plots.plot_attention(att, tokens, f"{model} / {dataset} / {att['arm']}: attention among the "
                                    f"tokens block {att['layer']} gathered (validation text)")
    return plots.message_figure("attention heatmap not drawn:\n" + "\n".join(reasons))


def richest_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the (model, dataset) cells that hold the most arms. An isoFLOP study has many cells with
    only the swept arms and one where every arm runs; the per-arm figures are about that one (in a grid
    where every cell has every arm, nothing is dropped)."""
    if table.empty:
        return table
    arm = "arm" if "arm" in table.columns else "variant"
    counts = table.groupby(["model", "dataset"])[arm].nunique()
    keep = set(counts[counts == counts.max()].index)
    return table[[cell in keep for cell in zip(table["model"], table["dataset"], strict=True)]]


def _learning_curve(args) -> Figure:
    from .curves import figure_learning_curve

    return figure_learning_curve(richest_cells(load(args.curves, "curves")), args.baseline)


def _isoflop(args) -> Figure:
    from .frontier_plots import figure_isoflop

    return figure_isoflop(read_csv(args.profiles), read_csv(args.frontier), args.baseline, args.dataset)


def _frontier(args) -> Figure:
    from .frontier_plots import figure_frontier

    return figure_frontier(read_csv(args.frontier), args.baseline)


FIGURES: dict[str, Callable[[argparse.Namespace], Figure]] = {
    "pareto": lambda a: plots.figure_pareto(richest_cells(load(a.runs, "runs")), a.baseline),
    "train_flops": lambda a: plots.figure_train_flops(richest_cells(load(a.runs, "runs")), a.baseline),
    "layers_hist": _layers_hist,
    "routing_map": _routing_map,
    "speed": lambda a: plots.figure_speed(load(a.bench, "bench")),
    "attention": _attention,
    "learning_curve": _learning_curve,
    "isoflop": _isoflop,
    "frontier": _frontier,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsedepth.study.figures",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=sorted(FIGURES))
    add_result_args(p, {"runs": "tidy runs table; per-token figures load its runs",
                        "bench": "benchmark table", "curves": "learning curves (study.aggregate --curves)",
                        "profiles": "isoFLOP profiles (study.frontier --profiles-out)",
                        "frontier": "isoFLOP frontier (study.frontier --out)"},
                    "the arm listed first, with the first colour")
    p.add_argument("--out", required=True, help="output PDF; a PNG is written next to it")
    p.add_argument("--model", help="model of the run cell (default: the cell with most variants)")
    p.add_argument("--dataset", help="dataset of the run cell (default: the cell with most variants); "
                   "isoflop: the dataset drawn (default: the one with most budgets)")
    p.add_argument("--variants", default="probe,mod", help="routing_map: comma-separated variants")
    p.add_argument("--variant", help="attention: variant (default: mod, else probe, else threshold)")
    p.add_argument("--mode", default="causal", help="attention: inference mode (causal|topk)")
    p.add_argument("--layer", type=int, help="attention: block (default: the most selective routed one)")
    p.add_argument("--tokens", type=int, default=48, help="routing_map/attention: tokens shown")
    p.add_argument("--start", type=int, default=0, help="offset of the text in the validation split")
    p.add_argument("--max-batches", type=int, default=4, help="layers_hist: validation batches per run")
    return p


def _user_errors() -> tuple[type[Exception], ...]:
    """What a bad input raises. Called by `main`'s `except` only once something was raised: the run-loading
    errors' modules import torch, which a figure drawn from tables never needs."""
    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    from ..data import DataError

    return ResultsError, ConfigError, CheckpointError, DataError, FileNotFoundError


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    matplotlib.use("Agg")
    sns.set_theme(context="paper", style="whitegrid")
    try:
        fig = FIGURES[args.name](args)
        pdf, png = plots.save(fig, args.out)
    except _user_errors() as e:  # evaluated only once something was raised
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (RuntimeError, OSError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    print(f"wrote {pdf} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
