"""Steadier speed numbers: a benchmark repeated in fresh processes reports medians and the speedup's range
over them, every row counts its torch ops (load-independent), and decoding follows `--dtype auto`."""

import pandas as pd
import pytest
import torch
from test_bench import CFG, CPU, TINY, tokens

from sparsedepth.bench import COLUMNS, BenchConfig, main, make_model
from sparsedepth.bench import cases as bench_cases
from sparsedepth.bench.grid import across_processes
from sparsedepth.bench.timing import op_count


@pytest.mark.slow(seconds=30)
def test_processes_give_medians_and_the_speedups_range(tmp_path):
    out = tmp_path / "bench.csv"
    assert main(["--out", str(out), "--routers", "mod", "--kinds", "prefill", "--processes", "3", *TINY]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS and len(df) == 2 and (df["processes"] == 3).all()
    assert ((df["speedup_min"] <= df["speedup"]) & (df["speedup"] <= df["speedup_max"])).all()
    assert (df["ops_per_call"] > 0).all()
    assert not list(tmp_path.glob("process*")), "the per-process tables are not left behind"


def test_across_processes_takes_the_median_of_every_measured_number():
    point = {"grid": "main", "kind": "prefill", "impl": "gather", "router": "mod", "capacity": 0.5,
             "batch": 2, "seq_len": 16, "d_model": 32, "n_layers": 2, "ideal_speedup": 2.0,
             "device_name": "CPU: x"}
    tables = [pd.DataFrame([{**point, "median_ms": ms, "speedup": s}]) for ms, s in ((10, 1.2), (30, 0.9),
                                                                                     (20, 1.5))]
    (row,) = across_processes(tables)
    assert (row["median_ms"], row["speedup"], row["speedup_min"], row["speedup_max"]) == (20, 1.2, 0.9, 1.5)
    assert row["processes"] == 3 and row["efficiency"] == 0.6 and row["device_name"] == "CPU: x"


def test_op_count_counts_dispatched_ops_including_backward():
    a = torch.ones(3, requires_grad=True)
    assert op_count(lambda: (a + 1).mul(2)) == 2
    assert op_count(lambda: (a * 2).sum().backward()) > 2  # the backward's ops are counted too


def test_routing_changes_the_op_count_of_a_prefill():
    idx = tokens(2, 16)
    counts = {}
    for router in ("dense", "mod"):
        model = make_model(router, CFG, 0.25, CPU, False, route_every=2, calibrate_on=tokens(4, 16, 1))
        with torch.no_grad():
            counts[router] = op_count(lambda m=model: m(idx))
    assert counts["mod"] != counts["dense"]  # gathering and scattering are ops of their own


def test_decode_and_prefill_cached_follow_dtype_auto(monkeypatch):
    auto = BenchConfig(dtype="auto")
    fp32 = bench_cases.decode_case(make_model("mod", CFG, 0.25, CPU, False), 4, 2, 1, CPU, auto)
    assert fp32.precision == "fp32" and fp32.impl == "gather"
    # where `auto` resolves to bf16 (CUDA), both take bf16 weights and say so, without the +bf16 suffix
    monkeypatch.setattr(bench_cases, "resolve", lambda precision, device: "bf16")
    for case in (bench_cases.decode_case(make_model("mod", CFG, 0.25, CPU, False), 4, 2, 1, CPU, auto),
                 bench_cases.prefill_cached_case(make_model("mod", CFG, 0.25, CPU, False), tokens(1, 4), CPU,
                                                 auto)):
        assert case.precision == "bf16" and case.impl == "gather"
        case.run()
