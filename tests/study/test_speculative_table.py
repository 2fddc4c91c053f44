"""The speculative-decoding table and macros: built from the benchmark's rows, `not measured` without them."""

import pandas as pd

from sparsedepth.bench.speculative import COLUMNS
from sparsedepth.study.speculative import (
    SPEC_MACROS,
    format_speculative,
    speculative_numbers,
    speculative_table,
)
from sparsedepth.study.tables import main as tables_main


def rows() -> pd.DataFrame:
    base = dict.fromkeys(COLUMNS, 1)
    base.update(device="cpu", device_name="CPU: test", model="M", dataset="shakespeare", seed=0,
                reference="dense", prompts=2, prompt_len=32, new_tokens=48, repeats=3, iqr_ms=1.0)
    out = []
    for arm, speed in (("dense", 1.0), ("early_exit", 0.8)):
        out.append({**base, "arm": arm, "decoding": "ordinary", "exit_layer": None, "draft_tokens": None,
                    "speedup": speed, "self_speedup": 1.0, "tokens_per_s": 100 * speed, "acceptance": None})
        for e, k, gain in ((1, 3, 1.5), (2, 3, 1.2)):
            out.append({**base, "arm": arm, "decoding": "speculative", "exit_layer": e, "draft_tokens": k,
                        "speedup": speed * gain, "self_speedup": gain, "tokens_per_s": 100 * speed * gain,
                        "acceptance": 0.5 + e / 10, "tokens_per_round": 2.0, "ideal_speedup": 0.9})
    return pd.DataFrame(out, columns=COLUMNS)


def test_table_orders_reference_first_and_says_what_was_checked():
    table = speculative_table(rows())
    assert list(table["arm"]) == ["dense"] * 3 + ["early_exit"] * 3
    assert list(table["label"][:3]) == ["ordinary", "exit 1, draft 3", "exit 2, draft 3"]
    tex = format_speculative(table)
    assert "\\label{tab:speculative}" in tex and "early\\_exit" in tex and "checked equal" in tex


def test_macros_quote_the_layerskip_arm_at_its_fastest_setting():
    m = speculative_numbers(rows())
    assert set(m) == {p + k for p in ("Cpu", "Gpu") for k in SPEC_MACROS}
    assert m["CpuSpecArm"] == "early\\_exit" and m["CpuSpecExitLayer"] == "1"
    assert m["CpuSpecSpeedup"] == "1.20" and m["CpuSpecAcceptance"] == "0.60"
    assert m["CpuSpecBestSpeedup"] == "1.50" and m["CpuSpecBestArm"] == "dense (exit 1, draft 3)"
    assert m["GpuSpecSpeedup"] == "\\textit{not measured}"
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
