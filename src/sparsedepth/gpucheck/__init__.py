"""`python -m sparsedepth.gpucheck` (`make gpu-check`): every GPU claim of the project checked in one call.

Why one call: an accelerator is lent now and then for minutes, without network, with its own `python3` and
torch. The check needs no venv and no `datasets` (its data is generated, `gpucheck.data`), runs the
gpu-marked tests, a training slice, the benchmark kinds and self-speculative decoding, writes
`OUT/{checks,train,bench,speculative}.csv` and `OUT/summary.md` (device, driver, torch, commit), and exits 1
if any part failed. With `--device cpu` the same code runs at tiny shapes (`shapes.TINY`), in CI.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..atomic import write_csv, write_text
from ..bench.config import BASELINE
from ..bench.timing import resolve_device
from ..config import ConfigError
from . import checks
from .machine import describe
from .shapes import PAPER, TINY

BENCH_BUDGET_S = 240.0  # the benchmark's share of the GPU's eight minutes; later points are skipped (fail)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sparsedepth.gpucheck", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA when visible, else the CPU")
    p.add_argument("--out", default="results/gpu", help="directory of the CSVs and summary.md (replaced)")
    p.add_argument("--shapes", default="auto", choices=["auto", "paper", "tiny"],
                   help="auto: the paper's on CUDA, tiny on the CPU")
    p.add_argument("--skip", default="",
                   help="parts to skip, comma-separated: tests, train, bench, speculative")
    return p


def summary_md(machine: dict, shapes: str, results: list[checks.Result], train: list[dict],
               bench: list[dict], spec: list[dict]) -> str:
    lines = [f"# GPU check: {'passed' if all(r.ok for r in results) else 'FAILED'}", "",
             f"- device: {machine['device_name']} ({machine['device']}), driver {machine['driver']}",
             f"- torch {machine['torch']} (CUDA {machine['cuda']}), commit {machine['commit']}",
             f"- shapes: {shapes}; written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", "",
             "| check | ok | seconds | detail |", "|---|---|---|---|"]
    lines += [f"| {r.check} | {'yes' if r.ok else 'NO'} | {r.seconds:.0f} | {r.detail} |" for r in results]
    if train:
        lines += ["", "| training slice | tokens/s | MFU | final loss | val loss | gap vs fp32 |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['arm']} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {r['final_train_loss']:.4f} | "
                  f"{r['val_loss']:.4f} | {r.get('loss_gap_vs_fp32', float('nan')):.2%} |" for r in train]
    if bench:
        lines += ["", "| kind | batch | router | speedup | ideal | efficiency | memory ratio |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['kind']} | {r['batch']} | {r['router']} | {r['speedup']:.2f} | "
                  f"{r['ideal_speedup']:.2f} | {r['efficiency']:.2f} | {r['memory_ratio']:.2f} |"
                  for r in bench if r["router"] != BASELINE]
    if spec:
        lines += ["", "| decoding | exit | speedup | acceptance | ceiling |", "|---|---|---|---|---|"]
        lines += [f"| {r['decoding']} | {r['exit_layer']} | {r['speedup']:.2f} | {r['acceptance']:.0%} | "
                  f"{r['ceiling_speedup']:.2f} |" for r in spec]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    import pandas as pd

    args = parser().parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skip = {s for s in args.skip.split(",") if s}
    unknown = skip - {"tests", "train", "bench", "speculative"}
    if unknown:
        print(f"error: --skip: unknown parts {sorted(unknown)}", file=sys.stderr)
        return 2
    shapes = {"paper": PAPER, "tiny": TINY}.get(args.shapes, PAPER if device.type == "cuda" else TINY)
    out = Path(args.out)
    work = out / "work"  # the slice's data and runs: removed at the end, never read as results
    shutil.rmtree(out, ignore_errors=True)
    work.mkdir(parents=True)
    machine = describe(device)
    print(f"gpu-check on {machine['device_name']}, torch {machine['torch']}, shapes {shapes.name}",
          flush=True)
    results, train, bench, spec = [], [], [], []
    parts = [("tests", lambda: checks.gpu_tests(device, shapes, out / "tests.log")),
             ("train", lambda: checks.train_slice(device, shapes, work, train)),
             ("bench", lambda: checks.bench_kinds(device, shapes, BENCH_BUDGET_S, bench)),
             ("speculative", lambda: checks.speculative(device, shapes, work, spec))]
    for name, part in parts:
        if name in skip or (name == "speculative" and "train" in skip):
            continue
        print(f"{name} ...", flush=True)
        results.append(checks.timed(name, part))
        r = results[-1]
        print(f"{name}: {'ok' if r.ok else 'FAILED'} in {r.seconds:.0f} s: {r.detail}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    frames = {"checks": [vars(r) for r in results], "train": train, "bench": bench, "speculative": spec}
    for name, rows in frames.items():
        if rows:
            columns = None
            if name == "bench":
                from ..bench.config import COLUMNS as columns
            write_csv(pd.DataFrame(rows, columns=columns), out / f"{name}.csv")
    write_text(summary_md({**machine}, shapes.name, results, train, bench, spec), out / "summary.md")
    shutil.rmtree(work, ignore_errors=True)
    ok = all(r.ok for r in results)
    print(f"gpu-check {'passed' if ok else 'FAILED'}: {out / 'summary.md'}")
    return 0 if ok else 1
