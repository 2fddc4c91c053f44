"""The analysis notebook's decoding sections on a tiny synthetic `results/` (SPARSEDEPTH_RESULTS): batched
decoding with the small-batch bounds and the speculative table with its ceilings, and an older bench.csv
(no bound columns, no speculative.csv) read with those said not measured. The smoke pipeline's test runs
the whole notebook on real results; this one needs no trained run."""

from pathlib import Path

import pandas as pd
import pytest

from sparsedepth.bench.speculative import COLUMNS as SPEC_COLUMNS

REPO = Path(__file__).resolve().parents[1]
BOUNDS = ["padded_ideal_speedup", "small_batch_cost", "attainable_speedup", "attainable_efficiency"]


def bench_rows() -> pd.DataFrame:
    base = {"device": "cpu", "device_name": "Synthetic CPU", "impl": "gather", "capacity": 0.125,
            "seq_len": 48, "grid": "main", "median_ms": 1.0}
    rows = [{**base, "kind": "prefill", "router": r, "batch": 2, "speedup": s, "ideal_speedup": s,
             "efficiency": 1.0} for r, s in (("dense", 1.0), ("mod", 1.4))]
    for batch, rho in ((1, 1.0), (4, 0.5)):
        rows.append({**base, "kind": "decode", "router": "dense", "batch": batch, "speedup": 1.0,
                     "ideal_speedup": 1.0, "efficiency": 1.0, "padded_ideal_speedup": 1.0,
                     "small_batch_cost": rho, "attainable_speedup": 1.0, "attainable_efficiency": 1.0})
        rows.append({**base, "kind": "decode", "router": "mod", "batch": batch, "speedup": 1.2,
                     "ideal_speedup": 1.6, "efficiency": 0.75, "padded_ideal_speedup": 1.1,
                     "small_batch_cost": rho, "attainable_speedup": 1.36,
                     "attainable_efficiency": 1.2 / 1.36})
    return pd.DataFrame(rows)


def speculative_rows() -> pd.DataFrame:
    base = dict.fromkeys(SPEC_COLUMNS, 1.0) | {
        "device": "cpu", "device_name": "Synthetic CPU", "model": "tiny", "dataset": "tinyshakespeare",
        "reference": "dense", "router": "early_exit", "draft_tokens": float("nan"), "batch": 1,
        "exit_layer": float("nan"), "acceptance": float("nan"), "tokens_per_round": float("nan"),
        "ceiling_speedup": float("nan")}
    rows = [base | {"arm": "dense", "router": "dense", "decoding": "ordinary"},
            base | {"arm": "early_exit", "decoding": "ordinary", "speedup": 1.1}]
    for exit_layer, ceiling in ((1, 2.75), (2, 1.9)):
        rows.append(base | {"arm": "early_exit", "decoding": "draft", "exit_layer": exit_layer,
                            "speedup": ceiling, "ceiling_speedup": ceiling})
        rows.append(base | {"arm": "early_exit", "decoding": "speculative", "exit_layer": exit_layer,
                            "draft_tokens": 3, "speedup": ceiling / 2, "self_speedup": ceiling / 2.2,
                            "acceptance": 0.6, "tokens_per_round": 2.5, "ceiling_speedup": ceiling})
    return pd.DataFrame(rows, columns=SPEC_COLUMNS)


def run_notebook(results: Path, monkeypatch) -> str:
    """Executes the notebook on `results`; its code cells' printed and displayed output, as one string."""
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    monkeypatch.setenv("SPARSEDEPTH_RESULTS", str(results))
    where = {"metadata": {"path": str(REPO / "notebooks")}}
    nbclient.NotebookClient(nb, timeout=300, resources=where).execute()
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            texts.append(str(out.get("text", "")))
            texts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(texts)


def test_decoding_sections_show_the_bounds_and_the_ceilings(tmp_path, monkeypatch):
    (tmp_path / "results" / "bench").mkdir(parents=True)
    bench_rows().to_csv(tmp_path / "results" / "bench" / "bench.csv", index=False)
    speculative_rows().to_csv(tmp_path / "results" / "bench" / "speculative.csv", index=False)
    text = run_notebook(tmp_path / "results", monkeypatch)
    for column in [*BOUNDS, "bound", "self_speedup", "tokens_per_round", "ceiling_speedup"]:
        assert column in text, column
    assert f"{1.36 / 1.6:.2f}" in text  # bound = attainable / ideal, computed by the notebook
    assert "draft only, exit 1" in text and "exit 2, draft 3" in text
    assert "best speculative speedup over dense: 1.38× (early_exit, exit 1, draft 3)" in text
    assert "highest ceiling: 2.75× (early_exit, exit 1)" in text
    assert "not measured" not in text.lower()
    assert not (REPO / "notebooks" / "results").exists(), "the notebook wrote data into the checkout"


def test_older_tables_say_what_was_not_measured(tmp_path, monkeypatch):
    (tmp_path / "results" / "bench").mkdir(parents=True)
    bench_rows().drop(columns=BOUNDS).to_csv(tmp_path / "results" / "bench" / "bench.csv", index=False)
    text = run_notebook(tmp_path / "results", monkeypatch)
    assert "efficiency" in text
    assert ("Not measured in this bench.csv (an older table): padded_ideal_speedup, small_batch_cost, "
            "attainable_speedup, attainable_efficiency, bound.") in text
    assert "Speculative decoding: not measured" in text
