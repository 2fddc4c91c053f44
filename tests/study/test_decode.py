"""The batched-decoding macros: FLOP efficiency, the bound the hardware's small-batch cost sets, and the
routing code's efficiency against it, from the benchmark's decode rows."""

import pandas as pd
import pytest

from sparsedepth.study.decode import DECODE_MACROS, decode_numbers
from sparsedepth.study.latex import NOT_MEASURED
from sparsedepth.study.numbers import numbers


def decode_rows(**extra):
    base = {"device": "cpu", "device_name": "Synthetic CPU", "kind": "decode", "impl": "gather",
            "capacity": 0.125, "seq_len": 192, "grid": "main"}
    rows = []
    for batch, rho in ((1, 1.0), (8, 0.5)):
        rows.append({**base, "router": "dense", "batch": batch, "speedup": 1.0, "ideal_speedup": 1.0,
                     "efficiency": 1.0, "padded_ideal_speedup": 1.0, "small_batch_cost": rho,
                     "attainable_speedup": 1.0, "attainable_efficiency": 1.0})
        rows.append({**base, "router": "mod", "batch": batch, "speedup": 1.2, "ideal_speedup": 1.5,
                     "efficiency": 0.8, "padded_ideal_speedup": 1.1, "small_batch_cost": rho,
                     "attainable_speedup": 1.3, "attainable_efficiency": 1.2 / 1.3, **extra})
    return pd.DataFrame(rows)


def test_decode_macros_quote_the_largest_batch():
    m = decode_numbers(decode_rows(), "cpu")
    assert m["DecodeBatch"] == "8" and m["DecodeSmallBatchCost"] == "0.50"
    assert m["DecodeModEfficiency"] == "0.80" and m["DecodeModAttainable"] == "1.30"
    assert m["DecodeModBound"] == f"{1.3 / 1.5:.2f}" and m["DecodeModAttainableEfficiency"] == "0.92"
    assert "DecodeProbeBound" not in m  # no probe rows: the caller says "not measured"
    assert set(m) <= set(DECODE_MACROS)


def test_tables_without_the_columns_or_rows_say_not_measured():
    assert decode_numbers(decode_rows().drop(columns=["attainable_speedup"]), "cpu") == {}
    assert decode_numbers(decode_rows(), "cuda") == {}


@pytest.mark.parametrize("device", ["Cpu", "Gpu"])
def test_every_decode_macro_is_defined_for_the_paper(device):
    bench = decode_rows()
    for col in ("median_ms", "iqr_ms", "peak_activation_mb", "layers_per_token"):
        bench[col] = 1.0
    m = numbers(pd.DataFrame(), pd.DataFrame(), bench, baseline="dense")
    assert all(f"{device}{k}" in m for k in DECODE_MACROS)
    if device == "Gpu":
        assert m["GpuDecodeModBound"] == NOT_MEASURED
    else:
        assert m["CpuDecodeModBound"] == f"{1.3 / 1.5:.2f}" and m["CpuDecodeProbeBound"] == NOT_MEASURED
