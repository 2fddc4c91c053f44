"""Command line of the benchmark: `python -m sparsedepth.bench --out CSV [flags]`, whose flags are generated
from `BenchConfig` (as training's are from `TrainConfig`), `... bench merge --out CSV INPUTS...`, and
`... bench speculative --out CSV --runs RUN_DIR... [flags]` (flags from `speculative.SpecConfig`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..cli import add_dataclass_flags, flags_to_overrides
from ..config import ConfigError, from_dict, to_dict
from ..startup import skip_dynamo_import
from .config import RUN_SETTINGS, BenchConfig, origin_grid
from .grid import POINT, across_processes, merge, run_grid, write_rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsedepth.bench",
                                description="Speed benchmarks: every router against dense, in one process.")
    p.add_argument("--out", required=True, help="CSV to write (atomically)")
    add_dataclass_flags(p, BenchConfig)
    return p


def config_from_flags(args: argparse.Namespace) -> BenchConfig:
    """Defaults < the flags given; `--grid origin` starts from its own grid, taking only the run settings."""
    given = flags_to_overrides(args, BenchConfig)
    if given.get("grid") == "origin":
        given = {**to_dict(origin_grid()), **{k: v for k, v in given.items() if k in RUN_SETTINGS}}
    return from_dict(BenchConfig, given, "benchmark flags")


def merge_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m sparsedepth.bench merge")
    p.add_argument("--out", required=True)
    p.add_argument("--speculative", action="store_true", help="the inputs are speculative tables (cells)")
    p.add_argument("inputs", nargs="+")
    args = p.parse_args(argv)
    try:
        if args.speculative:
            from . import speculative

            merge(args.inputs, args.out, speculative.COLUMNS, speculative.ADDED_COLUMNS)
        else:
            merge(args.inputs, args.out)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def speculative_parser() -> argparse.ArgumentParser:
    from .speculative import SpecConfig

    p = argparse.ArgumentParser(prog="python -m sparsedepth.bench speculative",
                                description="Self-speculative vs ordinary greedy decoding of trained runs "
                                "(one model/dataset/seed), batch 1, in one process.")
    p.add_argument("--out", required=True, help="CSV to write (atomically)")
    p.add_argument("--runs", nargs="+", required=True, help="finished run directories (results/runs/<model>/"
                   "<arm>/<dataset>/seed<k>) of the reference and every arm; the arm is the path's variant")
    add_dataclass_flags(p, SpecConfig)
    return p


def speculative_main(argv: Sequence[str]) -> int:
    from .speculative import POINT, SpecConfig, SpeculativeMismatch, measure
    from .speculative import write_rows as write_spec

    args = speculative_parser().parse_args(argv)
    try:
        spec = from_dict(SpecConfig, flags_to_overrides(args, SpecConfig), "speculative benchmark flags")
        if spec.processes > 1:
            return in_processes(["speculative", *argv], spec.processes, args.out, POINT, write_spec)
        skip_dynamo_import()  # speculative decoding never compiles
        rows = measure(spec, args.runs, progress=lambda s: print(s, flush=True))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SpeculativeMismatch as e:
        print(f"error: speculative output is not greedy output: {e}", file=sys.stderr)
        return 1
    write_spec(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


def in_processes(argv: Sequence[str], n: int, out: str, point: Sequence[str] = POINT,
                 write: Callable[[list[dict], str], None] = write_rows) -> int:
    """The same benchmark (`argv`: the grid's, or `speculative ...`) in `n` fresh processes, one after another
    (each times every case interleaved), then one table of medians and ranges over them
    (`grid.across_processes`, rows named by `point`); no output if any process fails."""
    import subprocess
    import tempfile
    from pathlib import Path

    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="bench-processes-") as tmp:
        tables = []
        for i in range(n):
            part = Path(tmp) / f"process{i}.csv"
            print(f"process {i + 1}/{n}", flush=True)
            cmd = [sys.executable, "-m", "sparsedepth.bench", *argv, "--processes", "1", "--out", str(part)]
            done = subprocess.run(cmd)
            if done.returncode != 0:
                print(f"error: benchmark process {i + 1}/{n} failed (see its output above)", file=sys.stderr)
                return done.returncode
            tables.append(pd.read_csv(part))
    rows = across_processes(tables, point)
    write(rows, out)
    print(f"wrote {len(rows)} rows to {out} (medians over {n} processes)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    if argv[:1] == ["speculative"]:
        return speculative_main(argv[1:])
    args = parser().parse_args(argv)
    try:
        bench = config_from_flags(args)
        if bench.processes > 1:
            return in_processes(argv, bench.processes, args.out)
        if not bench.compile:
            skip_dynamo_import()
        rows, skipped = run_grid(bench, progress=lambda s: print(s, flush=True))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_rows(rows, args.out)
    for label in skipped:
        print(f"skipped (time budget {bench.max_seconds:g} s spent): {label}")
    print(f"wrote {len(rows)} rows to {args.out}" + (f"; {len(skipped)} points skipped" if skipped else ""))
    return 0
