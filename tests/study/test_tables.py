"""Tables and numbers.tex from small synthetic results tables (fabricated inputs, unit tests only).

`synthetic_results()` builds a runs/stats/bench triple in the contract's shape (docs/CONTRACT.md); the figure
and notebook tests import it too.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from sparsedepth.study import tables
from sparsedepth.study.latex import NA, NOT_MEASURED, escape_latex, macro_name
from sparsedepth.study.numbers import RUN_MACROS, format_numbers, numbers
from sparsedepth.study.tables import bench_table, format_bench, format_main, main_table

ARMS = {  # arm: (variant, router, mode, capacity, layers/token, Δ loss)
    "dense": ("dense", "dense", "causal", 1.0, 4.0, 0.0),
    "probe": ("probe", "probe", "causal", 0.5, 2.6, 0.04),
    "probe-frozen": ("probe-frozen", "probe-frozen", "causal", 0.5, 2.1, 0.30),
    "mod": ("mod", "mod", "causal", 0.5, 3.0, 0.08),
    "mod[topk]": ("mod", "mod", "topk", 0.5, 3.0, -0.01),
}


def synthetic_results(seeds=(0, 1, 2), datasets=("shakespeare", "wiki_pedia")) -> dict[str, pd.DataFrame]:
    """Fabricated runs.csv / stats.csv / bench.csv frames with every contract column (for unit tests)."""
    rng = np.random.default_rng(0)
    dense_flops = 2.0e6
    runs = []
    for dataset in datasets:
        for seed in seeds:
            base = 5.0 + 0.05 * rng.standard_normal()
            for arm, (variant, router, mode, cap, layers, delta) in ARMS.items():
                loss = base + delta + 0.01 * rng.standard_normal()
                flops = dense_flops * layers / 4
                runs.append({
                    "model": "tiny", "variant": variant, "arm": arm, "router": router, "dataset": dataset,
                    "seed": seed, "capacity": cap, "mode": mode, "n_layers": 4, "d_model": 64,
                    "n_params": 250_000, "steps": 300, "batch_size": 16, "seq_len": 128, "val_loss": loss,
                    "val_ppl": float(np.exp(loss)), "test_loss": loss + 0.02,
                    "test_ppl": float(np.exp(loss + 0.02)), "val_bpb": loss / np.log(2) / 4,
                    "test_bpb": (loss + 0.02) / np.log(2) / 4,
                    "planned_train_flops": 3 * dense_flops * 300 * 16 * 128,
                    "layers_per_token": layers, "flops_per_token": flops,
                    "dense_flops_per_token": dense_flops,
                    "counted_flops_per_token": flops * 1.01, "train_flops": 3 * flops * 300 * 16 * 128,
                    "train_tokens_per_s": 20_000 * 4 / layers,
                    "causality_violation": 0.3 if mode == "topk" else 0.0,
                    "batch_leak": 0.0, "run_dir": f"results/runs/tiny/{variant}/{dataset}/seed{seed}",
                })
    runs = pd.DataFrame(runs)
    stats = []
    for (model, dataset, arm), g in runs[runs["arm"] != "dense"].groupby(["model", "dataset", "arm"]):
        d = ARMS[arm][5]
        primary = arm in ("probe", "mod")
        p_adj = 0.02 if abs(d) > 0.02 else 0.4
        verdict = ("worse" if d > 0 else "better") if p_adj < 0.05 else "no detectable difference"
        stats.append({"model": model, "dataset": dataset, "hypothesis": f"{arm} vs dense",
                      "family": "primary" if primary else "exploratory", "arm": arm, "reference": "dense",
                      "candidates": 1, "split": "test", "unit": "segment", "n_seeds": len(g), "n_units": 40,
                      "reference_bpb": 1.8, "arm_bpb": 1.8 + d, "effect": d, "rel_effect": d / 1.8,
                      "ci_low": d - 0.01, "ci_high": d + 0.01, "se": 0.005, "p": p_adj / 2, "p_adj": p_adj,
                      "p_t": 0.004, "p_t_adj": 0.01, "correction": "holm" if primary else "bh",
                      "mde": 0.012 if primary else np.nan, "rel_mde": 0.012 / 1.8 if primary else np.nan,
                      "sd_seed": 0.01, "sd_unit": 0.02,
                      "verdict": verdict,
                      "method": "crossed seed×unit bootstrap-t (Satterthwaite df)"})
    stats = pd.DataFrame(stats)
    bench = []
    for kind in ("train_step", "prefill", "decode"):
        for router, impl, cap, layers in (("dense", "gather", 1.0, 4.0), ("probe", "gather", 0.5, 2.6),
                                          ("probe", "origin-flat", 0.5, 2.6), ("mod", "gather", 0.5, 3.0)):
            for batch in (1, 8):
                for seq in (128, 512):
                    ideal = 4.0 / layers
                    speed = 1.0 if router == "dense" else ideal * (0.5 if impl == "origin-flat" else 0.8)
                    ms = 10.0 * batch * seq / 128 / speed
                    bench.append({
                        "device": "cpu", "device_name": "Synthetic_CPU x2", "torch": "2.13.0", "threads": 2,
                        "git_sha": "abc", "kind": kind, "impl": impl, "router": router, "capacity": cap,
                        "batch": batch, "seq_len": seq, "d_model": 64, "n_layers": 4, "repeats": 10,
                        "median_ms": ms, "iqr_ms": 0.1 * ms, "tokens_per_s": batch * seq / ms * 1e3,
                        "peak_activation_mb": 0.5 * batch * seq / 128, "layers_per_token": layers,
                        "flops_per_token": dense_flops * layers / 4, "dense_flops_per_token": dense_flops,
                        "speedup": speed, "ideal_speedup": ideal, "efficiency": speed / ideal,
                    })
    return {"runs": runs, "stats": stats, "bench": pd.DataFrame(bench)}


def write_results(root, frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Write the frames where the workflow puts them; returns the CLI paths."""
    (root / "bench").mkdir(parents=True, exist_ok=True)
    paths = {"runs": root / "runs.csv", "stats": root / "stats.csv", "bench": root / "bench" / "bench.csv"}
    for key, path in paths.items():
        frames[key].to_csv(path, index=False)
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="module")
def results():
    return synthetic_results()


def test_escape_latex_specials():
    assert escape_latex("seed_frozen 50% a&b #1 $x$ {y} ~^\\") == (
        r"seed\_frozen 50\% a\&b \#1 \$x\$ \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}")
    assert escape_latex("probe-frozen") == "probe-frozen"


@pytest.mark.parametrize("parts, name", [
    (("best arm", "wikitext2"), "BestArmWikitextTwo"),
    (("tiny", "wiki_pedia"), "TinyWikiPedia"),
    (("mod[topk]",), "ModTopk"),
])
def test_macro_name_is_letters_only(parts, name):
    assert macro_name(*parts) == name


def test_main_table_numbers(results):
    t = main_table(results["runs"], results["stats"], "dense")
    assert len(t) == 2 * len(ARMS)
    cell = t[t["dataset"] == "shakespeare"].set_index("arm")
    assert list(cell.index)[0] == "dense"  # baseline first
    assert cell.loc["probe", "flops_rel"] == pytest.approx(2.6 / 4)
    assert cell.loc["probe", "delta"] == pytest.approx(0.04) and cell.loc["probe", "p_holm"] == 0.02
    assert np.isnan(cell.loc["dense", "delta"])
    runs = results["runs"]
    ppl = runs[(runs["dataset"] == "shakespeare") & (runs["arm"] == "mod")]["val_ppl"]
    assert cell.loc["mod", "val_ppl"] == pytest.approx(ppl.mean())
    assert cell.loc["mod", "val_ppl_ci"] > 0


def test_main_table_without_stats_reports_delta_but_no_p(results):
    t = main_table(results["runs"], pd.DataFrame(), "dense")
    seed = t[(t["dataset"] == "shakespeare") & (t["arm"] == "probe")].iloc[0]
    assert seed["delta"] == pytest.approx(0.04, abs=0.03) and np.isnan(seed["p_holm"])
    assert "n/a" in format_main(t, "dense")


def test_main_table_latex_is_booktabs_and_escaped(results):
    tex = format_main(main_table(results["runs"], results["stats"], "dense"), "dense")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "wiki\\_pedia" in tex and "wiki_pedia" not in tex.replace("wiki\\_pedia", "")
    assert "mod[topk]" in tex and "\\label{tab:main}" in tex


def test_bench_table(results):
    t = bench_table(results["bench"], "prefill")
    assert set(t["kind"]) == {"prefill"} and t.iloc[0]["router"] == "dense"
    tex = format_bench(t, results["bench"], "prefill")
    assert "Synthetic\\_CPU x2" in tex and "\\toprule" in tex and "probe [origin-flat]" in tex
    assert "GPU: not measured" in tex


def test_bench_table_empty_says_not_measured():
    tex = format_bench(bench_table(pd.DataFrame()), pd.DataFrame())
    assert "no benchmark rows" in tex and "\\begin{table}" in tex


def test_numbers(results):
    m = numbers(results["runs"], results["stats"], results["bench"], baseline="dense")
    assert all(re.fullmatch(r"[A-Za-z]+", k) for k in m)
    assert m["NumRuns"] == str(2 * 4 * 3) and m["NumSeeds"] == "3"
    assert m["BestArmTinyShakespeare"] == "probe" and m["BestArmTinyWikiPedia"] == "probe"  # not mod[topk]
    assert m["ModGap"].startswith("$+0.0")
    assert m["CpuTargetRouter"] == "probe" and m["CpuTargetSeqLen"] == "512" and m["CpuTargetBatch"] == "8"
    assert m["CpuTargetEfficiency"] == "0.80" and m["CpuOriginFlatSpeedup"] == f"{4 / 2.6 * 0.5:.2f}"
    assert m["GpuTargetEfficiency"] == NOT_MEASURED and m["GpuDeviceName"] == NOT_MEASURED
    assert m["CpuDeviceName"] == "Synthetic\\_CPU x2"
    assert m["MaxCausalViolation"] == "$0$" and m["TopkCausalViolation"].startswith("$3.0")


def test_numbers_defined_on_empty_results():
    m = numbers(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), baseline="dense")
    assert set(RUN_MACROS) <= set(m) and m["NumRuns"] == NA and m["CpuTargetSpeedup"] == NOT_MEASURED
    tex = format_numbers(m)
    assert all(re.fullmatch(r"\\newcommand\{\\[A-Za-z]+\}\{.*\}", line)
               for line in tex.splitlines() if not line.startswith("%"))


@pytest.mark.parametrize("name", ["main", "bench", "numbers"])
def test_cli_writes_tex(name, results, tmp_path):
    paths = write_results(tmp_path / "results", results)
    out = tmp_path / "tables" / f"{name}.tex"
    assert tables.main([name, "--runs", paths["runs"], "--stats", paths["stats"], "--bench", paths["bench"],
                        "--baseline", "dense", "--out", str(out)]) == 0
    assert out.stat().st_size > 200


def test_cli_without_inputs_writes_not_measured(tmp_path):
    """A file that is not named is absent data: the table says so (and the paper still compiles)."""
    for name in ("main", "bench", "numbers"):
        out = tmp_path / f"{name}.tex"
        assert tables.main([name, "--baseline", "dense", "--out", str(out)]) == 0
        assert out.read_text().strip()


def test_cli_refuses_a_named_file_that_is_missing(tmp_path, capsys):
    out = tmp_path / "main.tex"
    missing = tmp_path / "none.csv"
    assert tables.main(["main", "--runs", str(missing), "--baseline", "dense", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(missing) in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("name", ["main", "numbers"])
def test_cli_refuses_a_diverged_run_naming_it(name, results, tmp_path, capsys):
    """Issue 13: a NaN loss (divergence on the last step) must stop the table, not drop the seed."""
    frames = {k: v.copy() for k, v in results.items()}
    frames["runs"].loc[3, "test_bpb"] = np.nan
    paths = write_results(tmp_path / "results", frames)
    out = tmp_path / f"{name}.tex"
    assert tables.main([name, "--runs", paths["runs"], "--stats", paths["stats"], "--bench", paths["bench"],
                        "--baseline", "dense", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "test_bpb" in err and frames["runs"].loc[3, "run_dir"] in err and err.count("\n") == 1
    assert not out.exists()


def test_baseline_comes_from_the_caller(results):
    """No arm is the baseline by name: with `probe` as baseline, probe is listed first without a delta."""
    t = main_table(results["runs"], results["stats"], "probe")
    first = t.groupby(["model", "dataset"]).head(1)
    assert (first["arm"] == "probe").all() and first["delta"].isna().all()
    assert "\\texttt{probe}" in format_main(t, "probe")


def test_cli_bad_columns_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "runs.csv"
    pd.DataFrame({"model": ["x"]}).to_csv(bad, index=False)
    out = str(tmp_path / "t.tex")
    assert tables.main(["main", "--runs", str(bad), "--baseline", "dense", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "lacks column" in err and err.count("\n") == 1


def test_memory_numbers_quote_the_headline_router_at_the_largest_point(results):
    bench = results["bench"].copy()
    before = numbers(results["runs"], results["stats"], bench, baseline="dense")
    assert before["CpuCacheMemoryRatio"] == NOT_MEASURED
    rows = []
    for router, ratio, ideal in (("dense", 1.0, 1.0), ("probe", 0.58, 0.57), ("mod", 0.60, 0.56)):
        for batch, seq in ((1, 640), (8, 640), (8, 128)):
            rows.append({**bench.iloc[0].to_dict(), "kind": "decode", "router": router, "batch": batch,
                         "seq_len": seq, "memory_ratio": ratio + (0.1 if (batch, seq) != (8, 640) else 0),
                         "ideal_memory_ratio": ideal})
    bench = pd.concat([bench, pd.DataFrame(rows)], ignore_index=True)
    m = numbers(results["runs"], results["stats"], bench, baseline="dense")
    assert m["CpuCacheMemoryRatio"] == "0.58" and m["CpuCacheMemoryIdeal"] == "0.57"
    assert m["CpuPrefillMemoryRatio"] == NOT_MEASURED and m["GpuCacheMemoryRatio"] == NOT_MEASURED


def test_training_mfu_reaches_the_bench_table_and_the_papers_macros(results):
    bench = results["bench"].copy()
    assert numbers(results["runs"], results["stats"], bench, baseline="dense")["CpuTrainMfu"] == NOT_MEASURED
    rows = [{**bench.iloc[0].to_dict(), "kind": "train_step", "impl": "gather", "router": router, "batch": 8,
             "seq_len": 512, "tokens_per_s": tps, "mfu": mfu, "precision": "fp32", "peak_tflops": 0.2,
             "peak_source": "measured matmul"}
            for router, tps, mfu in (("dense", 1000.0, 0.31), ("probe", 2500.0, 0.12))]
    bench = pd.concat([bench, pd.DataFrame(rows)], ignore_index=True)
    m = numbers(results["runs"], results["stats"], bench, baseline="dense")
    assert m["CpuTrainMfu"] == "12.0\\,\\%" and m["CpuTrainMfuDense"] == "31.0\\,\\%"
    assert m["CpuTrainTokensPerS"] == "2\\,500"
    assert m["CpuPeakSource"] == "measured matmul" and m["GpuTrainMfu"] == NOT_MEASURED
    tex = format_bench(bench_table(bench, "train_step"), bench, "train_step")
    assert "MFU (\\%)" in tex and "31.0" in tex and "over the device's peak (measured matmul)" in tex
