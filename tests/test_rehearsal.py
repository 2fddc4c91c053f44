"""The paper grid rehearsed (config/rehearsal.yaml): it is config/paper.yaml with only budgets shrunk, its
dry run is the paper's whole DAG, and a slice of it runs end to end on hub-shaped local corpora."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml
from test_data import STORIES, VALID_STORIES, WIKITEXT_ROWS
from test_data import _docs as docs_of
from test_data import _write_parquet as write_parquet
from test_pipeline import REPO, snakemake

from sparsedepth import data
from sparsedepth.data import SPLITS, load_corpus

# What a rehearsal may change: budgets (steps, batch, evaluation and benchmark sizes), the device, threads,
# and where the hub corpora come from. Everything else must be the paper's.
BUDGETS = {
    "name", "data_paths", "data_dir", "threads", "budget.steps",
    "train.device", "train.batch_size", "train.warmup_steps", "train.eval_every", "train.eval_batches",
    "train.checkpoint_every", "train.log_every", "evaluate.max_batches",
    "benchmark.device", "benchmark.batch", "benchmark.seq", "benchmark.decode_prompt", "benchmark.decode_new",
    "benchmark.decode_batch", "benchmark.repeats", "benchmark.warmup", "benchmark.threads",
    "benchmark.max_seconds", "benchmark.processes", "lm_eval.device", "lm_eval.batch_size", "lm_eval.limit",
    "speculative.prompts", "speculative.new_tokens", "speculative.repeats", "speculative.warmup",
    "speculative.device", "speculative.threads",
}


def _flat(value, prefix=""):
    if isinstance(value, dict) and not prefix.startswith(("models", "variants", "primaries", "data_paths")):
        out = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: value}


def test_rehearsal_is_the_paper_grid_with_smaller_budgets():
    paper, rehearsal = (_flat(yaml.safe_load((REPO / "config" / n).read_text()))
                        for n in ("paper.yaml", "rehearsal.yaml"))
    changed = {k for k in paper.keys() | rehearsal.keys() if paper.get(k) != rehearsal.get(k)}
    assert changed <= BUDGETS, f"the rehearsal changes more than budgets: {sorted(changed - BUDGETS)}"
    for key in ("models", "variants", "primaries", "seeds", "datasets", "vocab_size", "train.seq_len",
                "evaluate.segment_tokens", "benchmark.d_model", "benchmark.routers"):
        assert rehearsal[key] == paper[key], key



def test_rehearsal_slice_is_the_rehearsal_with_fewer_cells():
    """The slice a small machine runs to the PDF drops cells only (model M, two corpora, three seeds); every
    arm, shape, budget and protocol is the rehearsal's."""
    rehearsal, piece = (_flat(yaml.safe_load((REPO / "config" / n).read_text()))
                        for n in ("rehearsal.yaml", "rehearsal-slice.yaml"))
    changed = {k for k in rehearsal.keys() | piece.keys() if rehearsal.get(k) != piece.get(k)}
    assert changed == {"name", "models", "datasets", "seeds"}, sorted(changed)
    assert piece["models"] == {"S": rehearsal["models"]["S"]}
    assert set(piece["datasets"]) == {"tinystories", "wikitext2"} <= set(rehearsal["datasets"])
    assert set(piece["seeds"]) < set(rehearsal["seeds"]) and len(piece["seeds"]) >= 2

def _job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.slow
def test_rehearsal_dry_run_then_a_slice_end_to_end(tmp_path):
    """The whole paper DAG plans; then hub-shaped TinyStories and WikiText-2 are prepared at the paper's
    vocabulary through the hub's loading path, and one paper-shaped run trains, evaluates and is scored by
    lm-eval through its (temporary) export."""
    shutil.copytree(REPO / "paper", tmp_path / "paper", ignore=shutil.ignore_patterns("*.pdf", "*.aux"))
    rehearsal = str(REPO / "config" / "rehearsal.yaml")
    dry = snakemake("-n", "--cores", "2", "--configfile", rehearsal, "--directory", str(tmp_path),
                    timeout=600)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    counts = _job_counts(dry.stdout)
    assert counts["train"] == counts["evaluate"] == 2 * 9 * 4 * 5  # models × arms × corpora × seeds
    assert counts["paper"] == 1 and counts["prepare_data"] == 4 and counts["benchmark_grid"] == 2
    assert counts["export_hf"] == counts["lm_eval"] == counts["train"]  # the second measurement, every run

    subprocess.run([sys.executable, "-m", "sparsedepth.data.snapshot", "results/rehearsal/hub"],
                   cwd=tmp_path, check=True, capture_output=True)
    run = "results/runs/S/dense/tinystories/seed0"
    targets = [f"{run}/eval.json", f"{run}/lm_eval.json", "results/data/wikitext2-v16384/meta.json"]
    result = snakemake("--cores", "2", "--configfile", rehearsal, "--directory", str(tmp_path), *targets,
                       timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("tinystories", "wikitext2"):
        prepared = tmp_path / "results" / "data" / f"{name}-v16384"
        assert json.loads((prepared / "meta.json").read_text())["tokenizer_vocab_size"] == 16384  # paper's
        source = json.loads((prepared / "source.json").read_text())
        assert source["location"] == str((tmp_path / "results/rehearsal/hub" / name).resolve())
        assert all(f["name"].endswith(".parquet") for f in source["files"])
    # the Hugging Face export lm-eval scored is temporary: a paper-sized copy of the weights per run
    assert (tmp_path / run / "lm_eval.json").exists()
    assert not (tmp_path / run.replace("results/runs", "results/exports")).exists()
    evaluation = json.loads((tmp_path / run / "eval.json").read_text())
    assert evaluation["device"] == "cpu" and evaluation["modes"]["causal"]["test"]["n_tokens"] == 2 * 1024
    summary = json.loads((tmp_path / run / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["n_params"] > 30_000_000  # S at vocab 16384


# --- hub-shaped local corpora ---


def _record_load_dataset(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []
    real = datasets.load_dataset

    def recording(path, *args, **kwargs):
        calls.append((str(path), *args))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", recording)
    return calls


def test_hub_snapshots_take_the_hubs_loading_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A local copy in the hub's layout is read by the call made on the hub id, with the directory in its
    place: TinyStories' sharded data/*.parquet, WikiText's config dir named by its dataset card."""
    from sparsedepth.data.snapshot import WIKITEXT_CARD

    calls = _record_load_dataset(monkeypatch)
    ts = tmp_path / "ts"
    write_parquet(STORIES, ts / "data" / "train-00000-of-00001-2d5a1467fff1081b.parquet")
    write_parquet(VALID_STORIES, ts / "data" / "validation-00000-of-00001-869c898b519ad725.parquet")
    (ts / "TinyStories-train.txt").write_text("not read\n<|endoftext|>\n")  # the hub's repo has these too
    docs = docs_of(load_corpus("tinystories", local_path=str(ts)))
    assert calls == [(str(ts), None)] and docs["validation"] == VALID_STORIES

    wt = tmp_path / "wt"
    for split, rows in WIKITEXT_ROWS.items():
        write_parquet(rows, wt / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet")
        other = wt / "wikitext-103-raw-v1" / f"{split}-00000-of-00001.parquet"
        write_parquet([" = Other config = ", "never read"], other)
    (wt / "README.md").write_text(WIKITEXT_CARD)  # the hub card: configs and their files
    calls.clear()
    docs = docs_of(load_corpus("wikitext2", local_path=str(wt)))
    assert calls == [(str(wt), "wikitext-2-raw-v1")]
    assert [len(docs[s]) for s in SPLITS] == [2, 1, 1] and "Other config" not in "".join(docs["train"])
    assert data.corpus_source("wikitext2", str(wt)).names() == [
        f"wikitext-2-raw-v1/{s}-00000-of-00001.parquet" for s in ("train", "validation", "test")]
