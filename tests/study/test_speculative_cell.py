"""The decode cell's table and macros: speedups over each compared model's ordinary decoding from the same
process's medians, bits per byte beside them, and the grid's own table and macros untouched by its rows."""

import pandas as pd
import pytest

from sparsedepth.bench.speculative import COLUMNS
from sparsedepth.study.speculative import format_speculative, speculative_numbers, speculative_table
from sparsedepth.study.speculative_cell import DECODE_MACROS, cell_numbers, cell_table, main_cell, with_cells

NM = "\\textit{not measured}"


def decode_rows(device: str = "cpu") -> pd.DataFrame:
    """A decode cell: dense (12 blocks, the reference), dense-half (6 blocks, a baseline) and early_exit (12
    blocks) with two exits; medians in ms chosen so every ratio is known."""
    base = dict.fromkeys(COLUMNS)
    base.update(device=device, device_name="CPU: test", model="D12", dataset="shakespeare", seed=0,
                reference="dense", prompts=4, prompt_len=32, new_tokens=64, repeats=3, cell="decode")

    def row(arm, role, decoding, ms, layers=12, bpb=2.0, e=None, k=None, acceptance=None):
        return {**base, "arm": arm, "role": role, "decoding": decoding, "median_ms": ms, "n_layers": layers,
                "test_bpb": bpb, "exit_layer": e, "draft_tokens": k, "acceptance": acceptance}

    return pd.DataFrame([
        row("dense", "reference", "ordinary", 100.0, bpb=2.00),
        row("dense-half", "baseline", "ordinary", 60.0, layers=6, bpb=2.10),
        row("early_exit", "arm", "ordinary", 105.0, bpb=2.05),
        row("early_exit", "arm", "draft", 30.0, bpb=2.05, e=1),
        row("early_exit", "arm", "draft", 40.0, bpb=2.05, e=2),
        row("early_exit", "arm", "speculative", 55.0, bpb=2.05, e=1, k=3, acceptance=0.4),
        row("early_exit", "arm", "speculative", 45.0, bpb=2.05, e=2, k=5, acceptance=0.7),
    ], columns=COLUMNS)


def main_rows() -> pd.DataFrame:
    base = dict.fromkeys(COLUMNS)
    base.update(device="cpu", device_name="CPU: test", model="M", dataset="shakespeare", seed=0,
                reference="dense", prompts=2, prompt_len=32, new_tokens=48, repeats=3, n_layers=4,
                cell="main")
    rows = [{**base, "arm": "dense", "role": "reference", "decoding": "ordinary", "median_ms": 10.0,
             "speedup": 1.0, "tokens_per_s": 100.0},
            {**base, "arm": "mod", "role": "arm", "decoding": "speculative", "median_ms": 8.0,
             "exit_layer": 2, "draft_tokens": 3, "speedup": 1.25, "tokens_per_s": 125.0, "acceptance": 0.5}]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_each_comparator_gets_speedups_from_its_own_median():
    table = cell_table(decode_rows())
    assert list(table["comparator"]) == ["dense", "dense-half"]  # the reference first
    ref, half = table.iloc[0], table.iloc[1]
    assert ref["speculative"] == pytest.approx(100 / 45) and half["speculative"] == pytest.approx(60 / 45)
    assert ref["ceiling"] == pytest.approx(100 / 30) and ref["ceiling_exit"] == 1
    assert ref["ordinary"] == pytest.approx(100 / 105)
    assert (ref["exit_layer"], ref["draft_tokens"], ref["acceptance"]) == (2, 5, 0.7)
    assert (ref["comparator_bpb"], half["comparator_bpb"], half["bpb"]) == (2.00, 2.10, 2.05)
    assert half["comparator_layers"] == 6


def test_macros_quote_the_cell_against_same_depth_and_equal_quality():
    m = cell_numbers(decode_rows(), "cpu", "Cpu")
    assert set(m) == {"Cpu" + k for k in DECODE_MACROS}
    assert m["CpuDecodeSpeedup"] == "2.22" and m["CpuDecodeBaselineSpeedup"] == "1.33"
    assert m["CpuDecodeCeiling"] == "3.33" and m["CpuDecodeCeilingExit"] == "1"
    assert m["CpuDecodeBaselineCeiling"] == "2.00"  # dense-half's 60 ms over the fastest draft's 30 ms
    setting = (m["CpuDecodeExitLayer"], m["CpuDecodeDraftTokens"], m["CpuDecodeAcceptance"])
    assert setting == ("2", "5", "0.70")
    assert (m["CpuDecodeBpb"], m["CpuDecodeReferenceBpb"], m["CpuDecodeBaselineBpb"]) == (
        "2.050", "2.000", "2.100")
    assert m["CpuDecodeBaseline"] == "dense-half" and m["CpuDecodeLayers"] == "12"
    assert all(v == NM for v in cell_numbers(decode_rows(), "cuda", "Gpu").values())
    assert all(v == NM for v in cell_numbers(main_rows(), "cpu", "Cpu").values())


def test_decode_rows_leave_the_grids_table_and_macros_alone():
    both = pd.concat([main_rows(), decode_rows()], ignore_index=True)
    alone, mixed = speculative_numbers(main_rows()), speculative_numbers(both)
    assert {k: v for k, v in mixed.items() if "Decode" not in k} == {
        k: v for k, v in alone.items() if "Decode" not in k}
    assert mixed["CpuSpecArm"] == "mod" and mixed["CpuDecodeSpeedup"] == "2.22"
    table = speculative_table(both)
    assert list(table["cell"][:2]) == ["main", "main"]  # the grid's cell first
    tex = format_speculative(table)
    assert tex.count("\\begin{table") == 2 and "\\label{tab:decode-cell}" in tex
    assert "dense-half (6 blocks)" in tex and "2.22" in tex and "CPU thread" not in tex  # not recorded
    assert "\\label{tab:decode-cell}" not in format_speculative(speculative_table(main_rows()))


def test_a_file_without_cells_is_the_grids_cell():
    old = main_rows().drop(columns=["cell", "role", "test_bpb", "ceiling_speedup"])
    filled = with_cells(old)
    assert list(filled["cell"]) == ["main", "main"] and list(filled["role"]) == ["reference", "arm"]
    assert filled["test_bpb"].isna().all() and len(main_cell(old)) == 2
    assert cell_table(old).empty
    assert speculative_numbers(old)["CpuSpecSpeedup"] == "1.25"


def test_over_processes_the_reference_speedup_carries_its_range():
    """A cell timed in three processes: the fastest setting's speedup over the reference shows its range
    across them, and the caption says what the medians are over and at how many threads (a cell may set its
    own); over a baseline only the median."""
    rows = decode_rows()
    rows["processes"], rows["threads"] = 3, 1
    fast = (rows["decoding"] == "speculative") & (rows["exit_layer"] == 2)
    rows.loc[fast, ["speedup_min", "speedup_max"]] = [1.9, 2.4]
    table = cell_table(rows)
    ref, half = table.iloc[0], table.iloc[1]
    assert (ref["speculative_min"], ref["speculative_max"]) == (1.9, 2.4)
    assert pd.isna(half["speculative_min"]) and ref["processes"] == 3
    latex = format_speculative(speculative_table(pd.concat([main_rows(), rows], ignore_index=True)))
    assert "2.22 (1.90--2.40)" in latex and "median over 3 fresh processes" in latex
    assert "timed in the same process at 1 CPU thread (" in latex
    assert "1.33 (" not in latex  # dense-half: the median alone


def test_a_cell_may_set_its_own_processes_and_threads():
    """The default study times the decode cell at one thread in three processes, the main cell at the shared
    settings; a cell without its own value takes the shared one."""
    from pathlib import Path

    from sparsedepth.study.grid import load_study, speculative_cells

    study = load_study(Path(__file__).parents[2] / "config" / "config.yaml")
    spec = study["speculative"]
    cells = speculative_cells(study)
    assert cells["decode"]["threads"] == spec["decode"]["threads"] == 1
    assert cells["main"]["threads"] == spec["threads"] == 2
    assert cells["decode"]["processes"] == 3
    del spec["decode"]["threads"]
    assert speculative_cells(study)["decode"]["threads"] == spec["threads"]
