"""The speculative-decoding table and macros: built from the benchmark's rows, `not measured` without them;
the ceilings (draft-only rows) quoted where measured, files from before them still read."""

import pandas as pd

from sparsedepth.bench.speculative import COLUMNS
from sparsedepth.study.speculative import (
    SPEC_MACROS,
    format_speculative,
    speculative_numbers,
    speculative_table,
)
from sparsedepth.study.speculative_cell import DECODE_MACROS
from sparsedepth.study.tables import main as tables_main


def rows() -> pd.DataFrame:
    base = dict.fromkeys(COLUMNS, 1)
    base.update(device="cpu", device_name="CPU: test", model="M", dataset="shakespeare", seed=0,
                reference="dense", prompts=2, prompt_len=32, new_tokens=48, repeats=3, iqr_ms=1.0,
                cell="main", test_bpb=float("nan"))
    out = []
    for arm, speed, ceilings in (("dense", 1.0, {1: 1.9, 2: 1.4}), ("early_exit", 0.8, {1: 1.7, 2: 1.3})):
        out.append({**base, "arm": arm, "decoding": "ordinary", "exit_layer": None, "draft_tokens": None,
                    "speedup": speed, "self_speedup": 1.0, "tokens_per_s": 100 * speed, "acceptance": None,
                    "ceiling_speedup": None})
        for e, k, gain in ((1, 3, 1.5), (2, 3, 1.2)):
            c = ceilings[e]  # the draft alone is the fastest row: never the headline nor the best speedup
            out.append({**base, "arm": arm, "decoding": "draft", "exit_layer": e, "draft_tokens": None,
                        "speedup": c, "self_speedup": c / speed, "tokens_per_s": 100 * c, "acceptance": None,
                        "tokens_per_round": None, "ideal_speedup": 1.5, "ceiling_speedup": c})
            out.append({**base, "arm": arm, "decoding": "speculative", "exit_layer": e, "draft_tokens": k,
                        "speedup": speed * gain, "self_speedup": gain, "tokens_per_s": 100 * speed * gain,
                        "acceptance": 0.5 + e / 10, "tokens_per_round": 2.0, "ideal_speedup": 0.9,
                        "ceiling_speedup": c})
    df = pd.DataFrame(out, columns=COLUMNS)
    return df.assign(role=["reference" if a == "dense" else "arm" for a in df["arm"]])


def test_table_orders_reference_first_and_says_what_was_checked():
    table = speculative_table(rows())
    assert list(table["arm"]) == ["dense"] * 5 + ["early_exit"] * 5
    assert list(table["label"][:5]) == ["ordinary", "draft only, exit 1", "exit 1, draft 3",
                                        "draft only, exit 2", "exit 2, draft 3"]
    tex = format_speculative(table)
    assert "\\label{tab:speculative}" in tex and "early\\_exit" in tex and "checked equal" in tex
    assert "Ceiling" in tex and "1.90" in tex and "draft only, exit 2" in tex


def test_over_processes_the_grids_table_prints_each_speedups_range():
    """Timed in three processes: `vs dense` carries the range across them and the caption says so; the seed
    reads as a whole number."""
    df = rows()
    df["seed"], df["processes"] = 0.0, 3  # a CSV's integer column with blanks reads as float
    df["speedup_min"], df["speedup_max"] = df["speedup"] - 0.1, df["speedup"] + 0.2
    tex = format_speculative(speculative_table(df))
    assert "1.20 (1.10--1.40)" in tex and "median over 3 fresh processes" in tex and "seed 0)" in tex
    assert "(1.10--" not in format_speculative(speculative_table(rows()))  # one process: the median alone


def test_macros_quote_the_layerskip_arm_at_its_fastest_setting():
    m = speculative_numbers(rows())
    assert set(m) == {p + k for p in ("Cpu", "Gpu") for k in (*SPEC_MACROS, *DECODE_MACROS)}
    assert m["CpuSpecArm"] == "early\\_exit" and m["CpuSpecExitLayer"] == "1"
    assert m["CpuSpecSpeedup"] == "1.20" and m["CpuSpecAcceptance"] == "0.60"
    assert m["CpuSpecBestSpeedup"] == "1.50" and m["CpuSpecBestArm"] == "dense (exit 1, draft 3)"
    assert m["CpuSpecCases"] == "4"  # speculative rows only
    assert m["CpuSpecCeiling"] == "1.70"  # early_exit's, at its headline exit 1
    assert [m[f"CpuSpecMaxCeiling{k}"] for k in ("", "Arm", "Exit")] == ["1.90", "dense", "1"]
    assert m["CpuSpecMaxCeilingAcceptance"] == "0.60"  # dense's best acceptance at exit 1
    assert m["GpuSpecSpeedup"] == m["GpuSpecMaxCeiling"] == "\\textit{not measured}"
    assert all(v == "\\textit{not measured}" for v in speculative_numbers(pd.DataFrame()).values())


def test_cli_without_the_benchmark_writes_not_measured(tmp_path):
    for name in ("speculative", "numbers"):
        assert tables_main([name, "--baseline", "dense", "--out", str(tmp_path / f"{name}.tex")]) == 0
    assert "not measured" in (tmp_path / "speculative.tex").read_text()
    assert "\\newcommand{\\CpuSpecSpeedup}{\\textit{not measured}}" in (tmp_path / "numbers.tex").read_text()
    rows().to_csv(tmp_path / "speculative.csv", index=False)
    assert tables_main(["numbers", "--baseline", "dense", "--speculative", str(tmp_path / "speculative.csv"),
                        "--out", str(tmp_path / "n.tex")]) == 0
    assert "\\newcommand{\\CpuSpecSpeedup}{1.20}" in (tmp_path / "n.tex").read_text()


def test_a_file_from_before_the_ceiling_still_reads_its_ceilings_not_measured():
    old = rows()
    old = old[old["decoding"] != "draft"].drop(columns=["ceiling_speedup", "cell", "role", "test_bpb"])
    table = speculative_table(old)
    assert len(table) == 6 and table["ceiling_speedup"].isna().all()
    assert "Ceiling" in format_speculative(table)
    m = speculative_numbers(old)
    assert m["CpuSpecSpeedup"] == "1.20"
    assert all(m[f"Cpu{k}"] == "\\textit{not measured}" for k in SPEC_MACROS if "Ceiling" in k)
