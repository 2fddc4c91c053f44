"""The decode cell of the speculative benchmark: a model trained to exit early, compared in one table.

Why its own table: the grid's cell asks which router drafts best; a decode cell asks one question, whether
self-speculation on a deeper model trained for it decodes faster than dense *at equal quality*. So each of
its speculated arms gets one line per model it is compared with (the reference, dense of the same depth, and
each `baselines` arm, e.g. the dense model of equal quality): that model's and the arm's test bits per byte,
the arm's ordinary decoding, its best draft-only ceiling and its fastest speculative setting, all as speedups
over that model's ordinary decoding (timed in the same process: comparator median / row median).
Rows from files without `cell` belong to the grid's cell and are not read here.
"""

from __future__ import annotations

import pandas as pd

from .latex import NOT_MEASURED, escape_latex, finite, fmt_int, fmt_num, to_latex

MAIN_CELL = "main"
CELL_COLUMNS = {"ceiling_speedup": float("nan"), "cell": MAIN_CELL, "role": None, "test_bpb": float("nan"),
                "speedup_min": float("nan"), "speedup_max": float("nan"), "processes": 1}
DECODE_MACROS = ("DecodeCell", "DecodeModel", "DecodeLayers", "DecodeArm", "DecodeExitLayer",
                 "DecodeDraftTokens", "DecodeSpeedup", "DecodeCeiling", "DecodeCeilingExit",
                 "DecodeAcceptance", "DecodeOrdinary", "DecodeBpb", "DecodeReferenceBpb", "DecodeBaseline",
                 "DecodeBaselineBpb", "DecodeBaselineSpeedup", "DecodeBaselineLayers",
                 "DecodeBaselineCeiling")


def with_cells(spec: pd.DataFrame) -> pd.DataFrame:
    """The columns added with decode cells, filled as a file from before them means: the grid's cell, the
    reference's role from `reference`, every other arm speculated, bits per byte not recorded."""
    missing = {c: v for c, v in CELL_COLUMNS.items() if c not in spec.columns}
    if not missing or spec.empty:
        return spec
    spec = spec.assign(**missing)
    if "role" in missing:
        spec["role"] = ["reference" if a == r else "arm" for a, r in zip(spec["arm"], spec["reference"],
                                                                         strict=True)]
    return spec


def main_cell(spec: pd.DataFrame) -> pd.DataFrame:
    """The grid's own cell's rows (all rows of a file from before cells)."""
    spec = with_cells(spec)
    return spec[spec["cell"].fillna(MAIN_CELL) == MAIN_CELL] if not spec.empty else spec


def cell_table(spec: pd.DataFrame) -> pd.DataFrame:
    """One row per (device, decode cell, speculated arm, comparator): the comparator's and the arm's test
    bits/byte and, over the comparator's ordinary decoding, the arm's ordinary, best ceiling (with its exit)
    and fastest speculative speedup (with its setting and acceptance). Empty without decode cells."""
    spec = with_cells(spec) if not spec.empty else spec
    cols = ["device", "device_name", "cell", "model", "n_layers", "arm", "comparator", "comparator_layers",
            "comparator_bpb", "bpb", "ordinary", "ceiling", "ceiling_exit", "speculative", "exit_layer",
            "draft_tokens", "acceptance", "prompts", "new_tokens", "repeats", "processes", "threads",
            "speculative_min", "speculative_max"]
    if spec.empty:
        return pd.DataFrame(columns=cols)
    out = []
    decode = spec[spec["cell"].fillna(MAIN_CELL) != MAIN_CELL]
    for (device, cell), rows in decode.groupby(["device", "cell"], sort=True):
        ordinary = rows[rows["decoding"] == "ordinary"].set_index("arm")
        comparators = [a for a in ordinary.index if ordinary.loc[a, "role"] in ("reference", "baseline")]
        comparators.sort(key=lambda a: ordinary.loc[a, "role"] != "reference")  # the reference first
        for arm in sorted(set(rows.loc[rows["role"] == "arm", "arm"])):
            mine = rows[rows["arm"] == arm]
            drafts, spec_rows = mine[mine["decoding"] == "draft"], mine[mine["decoding"] == "speculative"]
            best = spec_rows.loc[spec_rows["median_ms"].idxmin()] if not spec_rows.empty else None
            top = drafts.loc[drafts["median_ms"].idxmin()] if not drafts.empty else None
            for comp in comparators:
                ms = ordinary.loc[comp, "median_ms"]
                out.append({
                    "device": device, "device_name": ordinary.loc[arm, "device_name"], "cell": cell,
                    "model": ordinary.loc[arm, "model"], "n_layers": ordinary.loc[arm, "n_layers"],
                    "arm": arm,
                    "comparator": comp, "comparator_layers": ordinary.loc[comp, "n_layers"],
                    "comparator_bpb": ordinary.loc[comp, "test_bpb"], "bpb": ordinary.loc[arm, "test_bpb"],
                    "ordinary": ms / ordinary.loc[arm, "median_ms"],
                    "ceiling": ms / top["median_ms"] if top is not None else float("nan"),
                    "ceiling_exit": top["exit_layer"] if top is not None else float("nan"),
                    "speculative": ms / best["median_ms"] if best is not None else float("nan"),
                    "exit_layer": best["exit_layer"] if best is not None else float("nan"),
                    "draft_tokens": best["draft_tokens"] if best is not None else float("nan"),
                    "acceptance": best["acceptance"] if best is not None else float("nan"),
                    **{k: ordinary.loc[arm, k]
                       for k in ("prompts", "new_tokens", "repeats", "processes", "threads")},
                    **_range(best, comp == best["reference"] if best is not None else False)})
    return pd.DataFrame(out, columns=cols)


def _range(best: pd.Series | None, over_reference: bool) -> dict[str, float]:
    """The fastest setting's speedup range across processes: known over the reference only (each process
    timed both; over a baseline only the medians compare)."""
    if best is None or not over_reference:
        return {"speculative_min": float("nan"), "speculative_max": float("nan")}
    return {"speculative_min": best["speedup_min"], "speculative_max": best["speedup_max"]}


def with_range(x: float, low: float, high: float) -> str:
    return f"{fmt_num(x)} ({fmt_num(low)}--{fmt_num(high)})" if finite(low) and low != high else fmt_num(x)


def format_cell(table: pd.DataFrame) -> str:
    """The decode cell's LaTeX table (nothing when there is none)."""
    if table.empty:
        return ""
    disp = pd.DataFrame({
        "Arm": table["arm"].map(escape_latex),
        "Compared with": [f"{escape_latex(c)} ({fmt_int(n)} blocks)" for c, n in
                          zip(table["comparator"], table["comparator_layers"], strict=True)],
        "Its bpb": [fmt_num(x, 3) for x in table["comparator_bpb"]],
        "Arm bpb": [fmt_num(x, 3) for x in table["bpb"]],
        "Ordinary": [fmt_num(x) for x in table["ordinary"]],
        "Ceiling (exit)": [f"{fmt_num(c)} ({fmt_int(e)})" if finite(c) else fmt_num(c)
                           for c, e in zip(table["ceiling"], table["ceiling_exit"], strict=True)],
        "Speculative": [with_range(*v) for v in zip(table["speculative"], table["speculative_min"],
                                                     table["speculative_max"], strict=True)],
        "Exit, draft": [f"{fmt_int(e)}, {fmt_int(k)}" if finite(e) else NOT_MEASURED
                        for e, k in zip(table["exit_layer"], table["draft_tokens"], strict=True)],
        "Accept.": [fmt_num(x) for x in table["acceptance"]],
    })
    if table["device"].nunique() > 1:
        disp.insert(0, "Device", table["device"].map(escape_latex))
    keys = 3 if "Device" in disp else 2
    first = table.iloc[0]
    caption = (f"The decode cell ({escape_latex(first['cell'])}: model {escape_latex(first['model'])}, "
               f"{fmt_int(first['n_layers'])} blocks, trained to exit early): its decoding at batch 1 over "
               f"each compared model's ordinary greedy decoding, timed in the same process{_threads(first)} "
               f"({fmt_int(first['prompts'])} prompts, {fmt_int(first['new_tokens'])} new tokens, median of "
               f"{fmt_int(first['repeats'])} repeats{processes_clause(first['processes'])}); test bits per "
               "byte of both; the draft-only ceiling at "
               "its best exit; the fastest speculative setting (exit layer, tokens drafted per round), "
               "whose output equals greedy decoding, and its acceptance.")
    return to_latex(disp, keys, caption, "tab:decode-cell")


def _threads(row: pd.Series) -> str:
    """The CPU thread count the cell was timed at (a cell may set its own), where known."""
    n = row["threads"]
    if row["device"] != "cpu" or not finite(n) or n < 1:
        return ""
    return f" at {fmt_int(n)} CPU thread{'' if n == 1 else 's'}"


def processes_clause(n: float) -> str:
    """How many processes a cell's medians are over, and where the range is (nothing for one)."""
    if not finite(n) or n <= 1:
        return ""
    return (f", then the median over {fmt_int(n)} fresh processes, with the range over them in parentheses "
            "(over the reference only)")


def cell_numbers(spec: pd.DataFrame, device: str, prefix: str) -> dict[str, str]:
    """`prefix` + DECODE_MACROS for the first decode cell's first arm on `device`: its fastest speculative
    speedup over the reference (dense, same depth) and over the first baseline (equal quality), with the
    bits per byte of each, and the draft-only ceiling over both: no speculative setting at the exits measured
    decodes faster than its draft alone, so a ceiling below a target over the baseline rules the target out
    for the whole cell (with exit 1 measured, for every exit); `not measured` without one."""
    table = cell_table(spec)
    table = table[table["device"] == device] if not table.empty else table
    found: dict[str, str] = {}
    if not table.empty:
        cell = table["cell"].iloc[0]
        mine = table[(table["cell"] == cell) & (table["arm"] == table["arm"].iloc[0])]
        ref, others = mine.iloc[0], mine.iloc[1:]
        found = {"DecodeCell": escape_latex(cell), "DecodeModel": escape_latex(ref["model"]),
                 "DecodeLayers": fmt_int(ref["n_layers"]), "DecodeArm": escape_latex(ref["arm"]),
                 "DecodeSpeedup": fmt_num(ref["speculative"]), "DecodeOrdinary": fmt_num(ref["ordinary"]),
                 "DecodeBpb": fmt_num(ref["bpb"], 3), "DecodeReferenceBpb": fmt_num(ref["comparator_bpb"], 3)}
        if finite(ref["exit_layer"]):
            found.update(DecodeExitLayer=fmt_int(ref["exit_layer"]),
                         DecodeDraftTokens=fmt_int(ref["draft_tokens"]),
                         DecodeAcceptance=fmt_num(ref["acceptance"]))
        if finite(ref["ceiling"]):
            found.update(DecodeCeiling=fmt_num(ref["ceiling"]),
                         DecodeCeilingExit=fmt_int(ref["ceiling_exit"]))
        if not others.empty:
            base = others.iloc[0]
            found.update(DecodeBaseline=escape_latex(base["comparator"]),
                         DecodeBaselineBpb=fmt_num(base["comparator_bpb"], 3),
                         DecodeBaselineSpeedup=fmt_num(base["speculative"]),
                         DecodeBaselineLayers=fmt_int(base["comparator_layers"]),
                         DecodeBaselineCeiling=fmt_num(base["ceiling"]))
    return {prefix + k: found.get(k, NOT_MEASURED) for k in DECODE_MACROS}
