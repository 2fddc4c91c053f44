"""The paper grid rehearsed (config/rehearsal.yaml): it is config/paper.yaml with only budgets shrunk (so
test_pipeline's dry run of paper.yaml plans its whole DAG), and a slice of it runs end to end on hub-shaped
local corpora."""

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

# What a rehearsal may change: budgets (training FLOPs, batch, evaluation and benchmark sizes), the device,
# threads, and where the hub corpora come from. Everything else must be the paper's.
BUDGETS = {
    "name", "data_paths", "data_dir", "threads", "budget.steps",
    "train.device", "train.batch_size", "train.warmup_steps", "train.eval_every", "train.eval_batches",
    "train.checkpoint_every", "train.log_every", "evaluate.max_batches",
    "benchmark.device", "benchmark.batch", "benchmark.seq", "benchmark.decode_prompt", "benchmark.decode_new",
    "benchmark.decode_batch", "benchmark.repeats", "benchmark.warmup", "benchmark.threads",
    "benchmark.max_seconds", "benchmark.processes", "lm_eval.device", "lm_eval.batch_size", "lm_eval.limit",
    "speculative.prompts", "speculative.new_tokens", "speculative.repeats", "speculative.warmup",
    "speculative.device", "speculative.threads", "speculative.processes",
}
BUDGET_FLOPS = re.compile(r"isoflop\.budgets\.\w+\.flops")  # an isoFLOP budget's training FLOPs


def _budgets(keys):
    return {k for k in keys if k in BUDGETS or BUDGET_FLOPS.fullmatch(k)}


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
    extra = sorted(changed - _budgets(changed))
    assert not extra, f"the rehearsal changes more than budgets: {extra}"
    for key in ("variants", "primaries", "seeds", "datasets", "vocab_size", "train.seq_len",
                "isoflop.variants", "isoflop.datasets.enwik8", "isoflop.budgets.C1.sizes.probe",
                "frontier.arms", "evaluate.segment_tokens", "benchmark.d_model", "benchmark.routers"):
        assert rehearsal[key] == paper[key], key
    flops = {k for k in paper if BUDGET_FLOPS.fullmatch(k)}
    assert flops and {k for k in changed if BUDGET_FLOPS.fullmatch(k)} == flops  # every budget shrinks



def test_rehearsal_slice_is_the_rehearsal_with_fewer_cells():
    """The slice a small machine runs to the PDF drops cells only (the budgets after C1, one seed); every
    arm, shape, window, budget and protocol is the rehearsal's."""
    rehearsal, piece = (_flat(yaml.safe_load((REPO / "config" / n).read_text()))
                        for n in ("rehearsal.yaml", "rehearsal-slice.yaml"))
    changed = {k for k in rehearsal.keys() | piece.keys() if rehearsal.get(k) != piece.get(k)}
    dropped = {k for k in changed if k.startswith(("isoflop.budgets.C3.", "isoflop.budgets.C10."))}
    assert changed - dropped == {"name", "seeds", "isoflop.datasets.enwik8"}, sorted(changed)
    assert all(k in rehearsal and k not in piece for k in dropped) and dropped
    assert piece["isoflop.datasets.enwik8"] == ["C1"] == piece["isoflop.datasets.tinystories"]
    assert set(piece["seeds"]) < set(rehearsal["seeds"]) and len(piece["seeds"]) >= 2

@pytest.mark.slow(seconds=100)
def test_rehearsal_slice_end_to_end(tmp_path):
    """Hub-shaped TinyStories is prepared at the paper's (byte-level) vocabulary through the hub's loading
    path, and one paper-shaped run (C1-d256) trains, evaluates and is scored by lm-eval through its
    (temporary) export. (The paper's whole DAG is planned by test_pipeline's dry run of config/paper.yaml;
    the rehearsal is that grid with smaller budgets, above.)"""
    shutil.copytree(REPO / "paper", tmp_path / "paper", ignore=shutil.ignore_patterns("*.pdf", "*.aux"))
    rehearsal = str(REPO / "config" / "rehearsal.yaml")
    subprocess.run([sys.executable, "-m", "sparsedepth.data.snapshot", "results/rehearsal/hub"],
                   cwd=tmp_path, check=True, capture_output=True)
    run = "results/runs/C1-d256/dense/tinystories/seed0"
    targets = [f"{run}/eval.json", f"{run}/lm_eval.json"]
    result = snakemake("--cores", "2", "--configfile", rehearsal, "--directory", str(tmp_path), *targets,
                       timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("tinystories",):
        prepared = tmp_path / "results" / "data" / f"{name}-v257"
        assert json.loads((prepared / "meta.json").read_text())["tokenizer_vocab_size"] == 257  # paper's
        source = json.loads((prepared / "source.json").read_text())
        assert source["location"] == str((tmp_path / "results/rehearsal/hub" / name).resolve())
        assert all(f["name"].endswith(".parquet") for f in source["files"])
    # the Hugging Face export lm-eval scored is temporary: a paper-sized copy of the weights per run
    assert (tmp_path / run / "lm_eval.json").exists()
    assert not (tmp_path / run.replace("results/runs", "results/exports")).exists()
    evaluation = json.loads((tmp_path / run / "eval.json").read_text())
    assert evaluation["device"] == "cpu" and evaluation["modes"]["causal"]["test"]["n_tokens"] == 2 * 1024
    summary = json.loads((tmp_path / run / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["n_params"] > 6_000_000  # d256 × 8 blocks


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
