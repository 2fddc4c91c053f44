"""The benchmark grid: every router against dense at each point, timed interleaved in one process, turned
into rows of the benchmark table (speedup, ideal speedup from FLOPs, efficiency); and merging tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..atomic import write_csv
from ..config import ConfigError, ModelConfig
from ..model import SparseDepthModel
from ..origin_reference import supports
from ..precision import allow_tf32
from ..routing import ROUTERS
from .cases import Case, decode_case, forward_case, make_model, prefill_cached_case
from .config import ADDED_COLUMNS, BASELINE, COLUMNS, VOCAB, BenchConfig, check
from .peak import device_peak, mfu_columns
from .timing import median_iqr, op_count, provenance, resolve_device, time_once

if TYPE_CHECKING:
    import pandas as pd

ONE_SAMPLE = "dense@batch1"  # a decoding point's extra timed case, which gives no row of its own


def base_row(device: torch.device, cfg: BenchConfig) -> dict:
    return {**provenance(device), "grid": cfg.grid, "d_model": cfg.d_model, "n_layers": cfg.n_layers,
            "repeats": cfg.repeats}


def warm(cases: dict[str, Case], warmup: int, progress: Callable[[str], None]) -> dict[str, Case]:
    """Untimed warm-up calls; a case that fails here (e.g. torch.compile without a working toolchain) is
    dropped with its reason, so one broken variant never costs the rest of the grid."""
    kept = {}
    for key, case in cases.items():
        try:
            for _ in range(max(1, warmup) + (3 if "+compile" in case.impl else 0)):  # recompiles settle
                case.reset()
                case.run()
            kept[key] = case
        except Exception as e:  # noqa: BLE001 — reported and skipped, by design
            if "+compile" not in case.impl:
                raise
            progress(f"skipped {key}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return kept


def measure_point(cases: dict[str, Case], kind: str, batch: int, seq_len: int, tokens: int,
                  bench: BenchConfig, device: torch.device, row: dict,
                  progress: Callable[[str], None] = print) -> list[dict]:
    """Time every case at one grid point, interleaved, and turn the times into rows."""
    cases = warm(cases, bench.warmup, progress)
    times: dict[str, list[float]] = {key: [] for key in cases}
    keys = list(cases)
    for r in range(bench.repeats):
        for key in keys if r % 2 == 0 else keys[::-1]:
            cases[key].reset()
            times[key].append(time_once(cases[key].run, device))
    one = median_iqr(times.pop(ONE_SAMPLE))[0] if ONE_SAMPLE in times else None  # dense at batch 1
    rows = []
    for key, case in cases.items():
        if key == ONE_SAMPLE:
            continue
        case.reset()
        ops = float("nan") if "+compile" in case.impl else op_count(case.run)  # compiled: other ops
        layers, flops, memory = case.stats()
        no_cache = (float("nan"), memory, layers)
        cache_bytes, measured, ideal = no_cache if case.memory is None else case.memory()
        ms, iqr = median_iqr(times[key])
        # model FLOPs of one call: those of the tokens each block ran; a training step is 3 × its forward
        call_flops = flops * tokens * (3 if kind == "train_step" else 1)
        peak, source = device_peak(device, row["device_name"], case.precision)
        rows.append({**row, "kind": kind, "impl": case.impl, "router": case.router,
                     "capacity": case.capacity, "batch": batch, "seq_len": seq_len, "median_ms": ms,
                     "iqr_ms": iqr, "tokens_per_s": tokens / (ms / 1e3), "peak_activation_mb": memory / 2**20,
                     "layers_per_token": layers, "flops_per_token": flops,
                     "cache_bytes_per_sample_block": cache_bytes,
                     "precision": case.precision, "peak_tflops": peak, "peak_source": source,
                     "ops_per_call": ops, "processes": 1,
                     **mfu_columns(call_flops, ms, peak),
                     "_memory": measured, "_ideal_memory": ideal,  # for the ratios below
                     "_small_batch": case.small_batch_flops})  # decoding: for `small_batch_bounds`
    baselines = {r["impl"][len("gather"):]: r for r in rows
                 if r["router"] == BASELINE and r["impl"].startswith("gather")}
    kept = []
    for r in rows:
        suffix = r["impl"][r["impl"].find("+"):] if "+" in r["impl"] else ""
        dense = baselines.get(suffix)
        if dense is None:  # its dense baseline (e.g. dense+compile) failed: no ratio to report
            progress(f"dropped {r['router']}[{r['impl']}]: no dense{suffix} baseline")
            continue
        r["dense_flops_per_token"] = dense["flops_per_token"]
        r["speedup"] = dense["median_ms"] / r["median_ms"]
        r["ideal_speedup"] = dense["flops_per_token"] / r["flops_per_token"]
        r["efficiency"] = r["speedup"] / r["ideal_speedup"]
        r["speedup_min"] = r["speedup_max"] = r["speedup"]  # one process: `across_processes` widens them
        r["memory_ratio"] = r["_memory"] / dense["_memory"] if dense["_memory"] else float("nan")
        r["ideal_memory_ratio"] = r["_ideal_memory"] / dense["_ideal_memory"]
        if r["_small_batch"] is not None:
            small_batch_bounds(r, dense, batch, one)
        kept.append(r)
    for r in rows:
        del r["_memory"], r["_ideal_memory"], r["_small_batch"]
    return kept


def small_batch_bounds(r: dict, dense: dict, batch: int, one: float | None) -> None:
    """A decoding row's ideals between "a block costs its whole batch whenever any sample runs it" (padded)
    and the FLOP ideal, and where this hardware sits on that line: ρ (`small_batch_cost`) = the dense
    model's decode step on one sample over its step on the point's `batch`, both timed in the point's
    interleaved repeats. The attainable speedup prices each block by the samples that ran it on that line
    (`cases.decode_flops`), so the attainable efficiency is the routing code's own, apart from the
    hardware's small-batch cost. ρ is kept within [1/B, 1], what timing noise alone can leave: one sample
    never needs to cost more than the batch (it could be padded to it), nor B samples more than B steps on
    one."""
    cost = r["_small_batch"]
    r["padded_ideal_speedup"] = dense["flops_per_token"] / cost(1.0)
    if batch > 1 and one is None:
        return
    rho = 1.0 if batch == 1 else min(max(one / dense["median_ms"], 1 / batch), 1.0)
    r["small_batch_cost"] = rho
    r["attainable_speedup"] = dense["flops_per_token"] / cost(rho)
    r["attainable_efficiency"] = r["speedup"] / r["attainable_speedup"]


def grid_points(bench: BenchConfig) -> list[tuple[str, int, int | tuple[int, int]]]:
    points: list = [(k, b, t) for k in bench.kinds if k != "decode" for b in bench.batch for t in bench.seq]
    if "decode" in bench.kinds:
        points += [("decode", b, (p, n)) for b in bench.decode_batch for p in bench.decode_prompt
                   for n in bench.decode_new]
    return points


def run_grid(bench: BenchConfig, progress: Callable[[str], None] = print) -> tuple[list[dict], list[str]]:
    """All rows of a grid, and the points skipped because the time budget ran out."""
    check(bench)
    device = resolve_device(bench.device)
    allow_tf32(device)  # training's policy: fp32 matmuls on CUDA may use TF32 (the peak MFU is against)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    row = base_row(device, bench)
    longest = max([*bench.seq, *(p + n for p in bench.decode_prompt for n in bench.decode_new)])
    cfg = ModelConfig(vocab_size=VOCAB, d_model=bench.d_model, n_layers=bench.n_layers, n_heads=bench.n_heads,
                      max_seq_len=longest)
    routers = [BASELINE, *[r for r in bench.routers if r != BASELINE]]
    calib = torch.randint(0, VOCAB, (4, min(128, longest)), generator=torch.Generator().manual_seed(7)) \
        if bench.calibrate else None

    def model(router: str, train: bool) -> SparseDepthModel:
        return make_model(router, cfg, bench.capacity, device, train, route_every=bench.route_every,
                          calibrate_on=calib)

    rows, skipped, start = [], [], time.perf_counter()
    for kind, batch, size in grid_points(bench):
        label = f"{kind} batch={batch} {'seq' if kind != 'decode' else 'prompt,new'}={size}"
        if time.perf_counter() - start > bench.max_seconds:
            skipped.append(label)
            continue
        progress(label)
        cases: dict[str, Case] = {}
        if kind == "decode":
            prompt_len, n_new = size
            for r in routers:
                cases[r] = decode_case(model(r, False), prompt_len, n_new, batch, device, bench)
            if batch > 1:  # the hardware's small-batch cost: dense decoding one sample, interleaved
                cases[ONE_SAMPLE] = decode_case(model(BASELINE, False), prompt_len, n_new, 1, device, bench)
            if bench.compile:
                progress("  (no +compile for decode: the cache length changes every step)")
            rows += measure_point(cases, kind, batch, prompt_len + n_new, batch * n_new, bench, device, row,
                                  progress)
            continue
        train = kind == "train_step"
        g = torch.Generator().manual_seed(batch * 1000 + size)
        idx = torch.randint(0, VOCAB, (batch, size), generator=g).to(device)
        targets = torch.randint(0, VOCAB, (batch, size), generator=g).to(device)
        if kind == "prefill_cached":
            for r in routers:
                cases[r] = prefill_cached_case(model(r, False), idx, device, bench)
            rows += measure_point(cases, kind, batch, size, batch * size, bench, device, row, progress)
            continue
        for r in routers:
            impls = ["gather"] if r == BASELINE else [
                i for i in bench.impls if i != "origin-flat" or supports(ROUTERS[r])]
            for impl in impls:
                cases[f"{r}[{impl}]"] = forward_case(model(r, train), impl, idx, targets, train, device,
                                                     bench)
            if bench.compile:
                cases[f"{r}[compile]"] = forward_case(model(r, train), "gather", idx, targets, train, device,
                                                      bench, compiled=True)
        logits_mb = batch * size * VOCAB * 4 / 2**20
        progress(f"  (logits: {logits_mb:.1f} MB fp32 of every forward's peak; the same for every router)")
        rows += measure_point(cases, kind, batch, size, batch * size, bench, device, row, progress)
    return rows, skipped


def write_rows(rows: list[dict], out: str | Path) -> None:
    import pandas as pd

    write_csv(pd.DataFrame(rows, columns=COLUMNS), out)


def merge(inputs: Sequence[str | Path], out: str | Path, columns: Sequence[str] = COLUMNS,
          added: Sequence[str] = ADDED_COLUMNS) -> None:
    """Concatenate benchmark CSVs with the given column contract (the grid's by default; the speculative
    benchmark's for its cells) into one tidy table (the workflow's bench.csv, speculative.csv)."""
    import pandas as pd

    frames = [pd.read_csv(p) for p in inputs]
    for path, frame in zip(inputs, frames, strict=True):
        missing = set(columns) - set(frame.columns) - set(added)  # tables written before them: NaN
        if missing:
            raise ConfigError(f"{path}: not a benchmark table (missing {sorted(missing)})")
    write_csv(pd.concat(frames, ignore_index=True).reindex(columns=list(columns)), out)


POINT = ["grid", "kind", "impl", "router", "capacity", "batch", "seq_len", "d_model", "n_layers"]


def across_processes(tables: Sequence[pd.DataFrame], point: Sequence[str] = POINT) -> list[dict]:
    """One row per point (the columns that name a measurement: the grid's by default) of the same benchmark
    run in several processes: each measured number is the median over processes, the speedup's range is
    [speedup_min, speedup_max], and `processes` says how many measured it. Why: on shared machines a
    process's timings shift as a whole (the same dense decode took 319-479 ms in back-to-back processes),
    which repeats inside one process cannot see."""
    import pandas as pd

    rows = []
    frame = pd.concat([t.assign(_process=i) for i, t in enumerate(tables)], ignore_index=True)
    for _, group in frame.groupby(list(point), sort=False, dropna=False):
        row = group.iloc[0].to_dict()
        for column in group.columns:
            if column not in point and pd.api.types.is_numeric_dtype(group[column]):
                row[column] = group[column].median()
        row["speedup_min"], row["speedup_max"] = group["speedup"].min(), group["speedup"].max()
        if "ideal_speedup" in row:
            row["efficiency"] = row["speedup"] / row["ideal_speedup"]
        row["processes"] = group["_process"].nunique()
        del row["_process"]
        rows.append(row)
    return rows
