"""Batched decoding's numbers for the paper: how close per-sample routing gets to its FLOP ideal, and how
close this hardware lets it get (`bench.grid.small_batch_bounds`).

Why its own module: the FLOP ideal of batched decoding assumes a block run by k of B samples costs k/B of
running all B; small-batch decoding is bound by weight reads and per-op overhead, so it costs more. The
benchmark measures that cost (ρ: the dense model's decode step on one sample over its step on B) and prices
the routed runs' own decisions with it; these macros quote the FLOP efficiency, the best one ρ allows
(attainable / FLOP ideal) and the routing code's efficiency against the attainable speedup.
"""

from __future__ import annotations

import pandas as pd

from .latex import fmt_int, fmt_num
from .results import DENSE_ROUTER

DECODE_ROUTERS = {"mod": "Mod", "probe": "Probe"}  # router → macro infix (the two)
DECODE_FIELDS = ("Speedup", "Ideal", "Efficiency", "Padded", "Attainable", "Bound", "AttainableEfficiency")
DECODE_MACROS = ("DecodeBatch", "DecodeSmallBatchCost",
                 *[f"Decode{infix}{f}" for infix in DECODE_ROUTERS.values() for f in DECODE_FIELDS])


def bound(rows: pd.DataFrame) -> pd.Series:
    """attainable / FLOP ideal: the best FLOP efficiency a row's routing decisions allow on its hardware."""
    return rows["attainable_speedup"] / rows["ideal_speedup"]


def decode_numbers(bench: pd.DataFrame, device: str) -> dict[str, str]:
    """At the largest decoding batch on `device` (then the longest length), gathered implementation."""
    if "attainable_speedup" not in bench:
        return {}
    on = bench[(bench["device"] == device) & (bench["kind"] == "decode") & (bench["impl"] == "gather")
               & bench["attainable_speedup"].notna()]
    if on.empty:
        return {}
    on = on[on["batch"] == on["batch"].max()]
    on = on[on["seq_len"] == on["seq_len"].max()]
    m = {"DecodeBatch": fmt_int(on["batch"].iloc[0])}
    dense = on[on["router"] == DENSE_ROUTER]
    if not dense.empty:
        m["DecodeSmallBatchCost"] = fmt_num(dense["small_batch_cost"].iloc[0])
    for router, infix in DECODE_ROUTERS.items():
        rows = on[on["router"] == router].sort_values("capacity")
        if rows.empty:
            continue
        r = rows.iloc[0]
        values = {"Speedup": r["speedup"], "Ideal": r["ideal_speedup"], "Efficiency": r["efficiency"],
                  "Padded": r["padded_ideal_speedup"], "Attainable": r["attainable_speedup"],
                  "Bound": bound(rows).iloc[0],
                  "AttainableEfficiency": r["attainable_efficiency"]}
        m.update({f"Decode{infix}{k}": fmt_num(v) for k, v in values.items()})
    return m
