"""The speculative-decoding benchmark (results/bench/speculative.csv) as a LaTeX table and paper macros.

Why its own module: the table and the `\\CpuSpec...`/`\\GpuSpec...` macros read one file that exists only
when the study turns the benchmark on; without it both say "not measured", so the paper compiles either way.
The headline is the LayerSkip-trained arm (`early_exit`) when measured, as self-speculation is what its
early-exit training prepares its early blocks for; the best speedup of any arm is quoted beside it, and so
are the ceilings (the draft alone's speed: speculation at that exit if every draft were accepted and
verification were free). Files written before the ceiling existed (no `ceiling_speedup`) still read, their
ceilings "not measured". A decode cell's rows (`cell` other than main: a deeper model trained to exit
early, `study.speculative_cell`) get a table and `...Decode...` macros of their own after the grid's; files
written before cells read as the grid's cell.
"""

from __future__ import annotations

import pandas as pd

from .latex import NOT_MEASURED, empty_table, escape_latex, finite, fmt_int, fmt_list, fmt_num, to_latex
from .results import require
from .speculative_cell import (
    MAIN_CELL,
    cell_numbers,
    cell_table,
    format_cell,
    main_cell,
    processes_clause,
    with_cells,
    with_range,
)

COLUMNS = ("device", "device_name", "model", "dataset", "seed", "reference", "arm", "decoding", "exit_layer",
           "draft_tokens", "prompts", "prompt_len", "new_tokens", "repeats", "median_ms", "iqr_ms",
           "tokens_per_s", "speedup", "self_speedup", "acceptance", "tokens_per_round", "ideal_speedup",
           "n_layers")
HEADLINE_ARM = "early_exit"
SPEC_MACROS = ("SpecDeviceName", "SpecModel", "SpecDataset", "SpecPrompts", "SpecNewTokens", "SpecArm",
               "SpecExitLayer", "SpecDraftTokens", "SpecSpeedup", "SpecSelfSpeedup", "SpecAcceptance",
               "SpecTokensPerRound", "SpecIdealSpeedup", "SpecBestSpeedup", "SpecBestArm", "SpecCases",
               "SpecLayers", "SpecCeiling", "SpecMaxCeiling", "SpecMaxCeilingArm", "SpecMaxCeilingExit",
               "SpecMaxCeilingAcceptance")
CEILING = "ceiling_speedup"  # optional: absent from files written before the draft-only rows


def _label(row: pd.Series) -> str:
    if row["decoding"] == "draft":
        return f"draft only, exit {int(row['exit_layer'])}"
    if row["decoding"] != "speculative":
        return "ordinary"
    return f"exit {int(row['exit_layer'])}, draft {int(row['draft_tokens'])}"


def _with_ceiling(spec: pd.DataFrame) -> pd.DataFrame:
    return with_cells(spec)  # the ceiling and the cell columns, as a file from before them means


def speculative_table(spec: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, device, arm, decoding): the grid's cell first; within a cell the reference arm
    first, each arm's ordinary decoding first, then per exit layer the draft alone and the speculative
    settings."""
    if spec.empty:
        return pd.DataFrame(columns=[*COLUMNS, CEILING, "cell", "role", "test_bpb", "label"])
    require(spec, COLUMNS, "speculative benchmark table")
    df = _with_ceiling(spec.copy())
    df["label"] = [_label(r) for _, r in df.iterrows()]
    df["_main"] = df["cell"].fillna(MAIN_CELL) != MAIN_CELL
    df["_ref"] = df["arm"] != df["reference"]
    df["_other"] = df["decoding"] != "ordinary"
    df["_spec"] = df["decoding"] == "speculative"
    df = df.sort_values(["_main", "cell", "device", "_ref", "arm", "_other", "exit_layer", "_spec",
                         "draft_tokens"], kind="stable")
    return df.drop(columns=["_main", "_ref", "_other", "_spec"]).reset_index(drop=True)


def format_speculative(table: pd.DataFrame) -> str:
    """The grid's cell's table, then the decode cell's when measured (`speculative_cell.format_cell`)."""
    return _format_main(main_cell(table)) + format_cell(cell_table(table))


def _format_main(table: pd.DataFrame) -> str:
    label = "tab:speculative"
    if table.empty:
        return empty_table("Self-speculative decoding of the trained runs: not measured.", label,
                           "the study's speculative benchmark is off")
    disp = pd.DataFrame({
        "Tok/s": [fmt_num(x, 0) for x in table["tokens_per_s"]],
        "IQR (ms/call)": [fmt_num(x, 0) for x in table["iqr_ms"]],
        "vs dense": [with_range(*v) for v in zip(table["speedup"], table["speedup_min"], table["speedup_max"],
                                                 strict=True)],
        "vs own": [fmt_num(x) for x in table["self_speedup"]],
        "Accept.": [fmt_num(x) for x in table["acceptance"]],
        "Tok/round": [fmt_num(x) for x in table["tokens_per_round"]],
        "Ideal": [fmt_num(x) for x in table["ideal_speedup"]],
        "Ceiling": [fmt_num(x) for x in table[CEILING]],
    })
    keys = {"Arm": table["arm"].map(escape_latex), "Decoding": table["label"].map(escape_latex)}
    if table["device"].nunique() > 1:
        keys = {"Device": table["device"].map(escape_latex), **keys}
    keys = pd.DataFrame({k: v.to_numpy() for k, v in keys.items()})
    first = table.iloc[0]
    named = (("model", first["model"]), ("dataset", first["dataset"]), ("seed", fmt_int(first["seed"])))
    what = ", ".join(f"{escape_latex(k)} {escape_latex(v)}" for k, v in named)
    caption = (f"Self-speculative decoding of the trained runs ({what}) on "
               f"{fmt_list(sorted(table['device_name'].astype(str).unique()))}: batch 1, greedy, "
               f"{fmt_int(first['prompts'])} test prompts of {fmt_int(first['prompt_len'])} tokens, "
               f"{fmt_int(first['new_tokens'])} new tokens each, median over {fmt_int(first['repeats'])} "
               f"interleaved repeats (prefill included){processes_clause(first['processes'])}. The draft "
               "is the first \\emph{exit} blocks and the "
               "head; the rest of the model verifies \\emph{draft} tokens per round. Speedups: over "
               f"{escape_latex(first['reference'])}'s and over the same arm's ordinary decoding, measured in "
               "the same process; acceptance = accepted / drafted tokens; ideal = FLOPs per token of the "
               "reference / of this row (torch's FLOP counter); ceiling = the reference's time over that "
               "of the draft alone at this exit (\\emph{draft only}: the whole model prefills, the draft "
               "decodes every token), the speedup speculation would reach if every draft were accepted and "
               "verification were free. Every speculative output was checked equal to ordinary greedy "
               "decoding (the benchmark fails otherwise).")
    return to_latex(pd.concat([keys, disp], axis=1), keys.shape[1], caption, label)


def _best_config(rows: pd.DataFrame) -> pd.Series:
    order = rows.sort_values(["tokens_per_s", "exit_layer", "draft_tokens"], ascending=[False, True, True])
    return order.iloc[0]


def fastest(on: pd.DataFrame) -> pd.Series:
    """The speculative row with the largest speedup over the reference (`on`: speculative rows)."""
    return on.sort_values("speedup", ascending=False).iloc[0]


def highest_ceiling(on: pd.DataFrame) -> pd.Series | None:
    """The draft-only row with the highest ceiling (ties: the earlier exit); None without one."""
    drafts = on[(on["decoding"] == "draft") & on[CEILING].notna()]
    if drafts.empty:
        return None
    return drafts.sort_values([CEILING, "exit_layer"], ascending=[False, True]).iloc[0]


def speculative_numbers(spec: pd.DataFrame) -> dict[str, str]:
    """`Cpu`/`Gpu` + SPEC_MACROS: the headline arm's fastest configuration on each device (with the ceiling at
    its exit), the best speedup over the reference of any arm, the highest ceiling of any arm and exit, and
    the setup; `not measured` where there is no row (or, for the ceilings, no draft-only row)."""
    m: dict[str, str] = {}
    spec, every = main_cell(spec), spec
    for device, prefix in (("cpu", "Cpu"), ("cuda", "Gpu")):
        m.update(cell_numbers(every, device, prefix))
        found: dict[str, str] = {}
        on = spec[spec["device"] == device] if not spec.empty else spec
        rows = on[on["decoding"] == "speculative"] if not on.empty else on
        if not rows.empty:
            require(spec, COLUMNS, "speculative benchmark table")
            arm = HEADLINE_ARM if HEADLINE_ARM in set(rows["arm"]) else sorted(rows["arm"])[0]
            head = _best_config(rows[rows["arm"] == arm])
            best = fastest(rows)
            found = {"SpecDeviceName": fmt_list(sorted(on["device_name"].astype(str).unique())),
                     "SpecModel": escape_latex(head["model"]), "SpecDataset": escape_latex(head["dataset"]),
                     "SpecPrompts": fmt_int(head["prompts"]), "SpecNewTokens": fmt_int(head["new_tokens"]),
                     "SpecArm": escape_latex(arm), "SpecExitLayer": fmt_int(head["exit_layer"]),
                     "SpecDraftTokens": fmt_int(head["draft_tokens"]),
                     "SpecSpeedup": fmt_num(head["speedup"]),
                     "SpecSelfSpeedup": fmt_num(head["self_speedup"]),
                     "SpecAcceptance": fmt_num(head["acceptance"]) if finite(head["acceptance"])
                     else NOT_MEASURED,
                     "SpecTokensPerRound": fmt_num(head["tokens_per_round"]),
                     "SpecIdealSpeedup": fmt_num(head["ideal_speedup"]),
                     "SpecBestSpeedup": fmt_num(best["speedup"]),
                     "SpecBestArm": escape_latex(f"{best['arm']} ({_label(best)})"),
                     "SpecCases": str(len(rows)), "SpecLayers": fmt_int(head["n_layers"])}
            if finite(head[CEILING]):
                found["SpecCeiling"] = fmt_num(head[CEILING])
            top = highest_ceiling(on)
            if top is not None:
                found.update(SpecMaxCeiling=fmt_num(top[CEILING]), SpecMaxCeilingArm=escape_latex(top["arm"]),
                             SpecMaxCeilingExit=fmt_int(top["exit_layer"]))
                there = rows[(rows["arm"] == top["arm"]) & (rows["exit_layer"] == top["exit_layer"])]
                if there["acceptance"].notna().any():  # how often that cheap draft is right
                    found["SpecMaxCeilingAcceptance"] = fmt_num(there["acceptance"].max())
        m.update({prefix + k: found.get(k, NOT_MEASURED) for k in SPEC_MACROS})
    return m
