"""The paper grid rehearsed (config/rehearsal.yaml): it is config/paper.yaml with only budgets shrunk, its
dry run is the paper's whole DAG, and a slice of it runs end to end on hub-shaped local corpora."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_pipeline import REPO, snakemake

# What a rehearsal may change: budgets (steps, batch, evaluation and benchmark sizes), the device, threads,
# and where the hub corpora come from. Everything else must be the paper's.
BUDGETS = {
    "name", "data_paths", "data_dir", "threads", "budget.steps",
    "train.device", "train.batch_size", "train.warmup_steps", "train.eval_every", "train.eval_batches",
    "train.checkpoint_every", "train.log_every", "evaluate.max_batches",
    "benchmark.device", "benchmark.batch", "benchmark.seq", "benchmark.decode_prompt", "benchmark.decode_new",
    "benchmark.decode_batch", "benchmark.repeats", "benchmark.warmup", "benchmark.threads",
    "benchmark.max_seconds",
}


def _flat(value, prefix=""):
    if isinstance(value, dict) and not prefix.startswith(("models", "variants", "primaries")):
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


def _job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.slow
def test_rehearsal_dry_run_then_a_slice_end_to_end(tmp_path):
    """The whole paper DAG plans; then hub-shaped TinyStories and WikiText-2 are prepared at the paper's
    vocabulary through the hub's loading path, and one paper-shaped run trains and evaluates."""
    shutil.copytree(REPO / "paper", tmp_path / "paper", ignore=shutil.ignore_patterns("*.pdf", "*.aux"))
    rehearsal = str(REPO / "config" / "rehearsal.yaml")
    dry = snakemake("-n", "--cores", "2", "--configfile", rehearsal, "--directory", str(tmp_path))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    counts = _job_counts(dry.stdout)
    assert counts["train"] == counts["evaluate"] == 2 * 8 * 4 * 5  # models × arms × corpora × seeds
    assert counts["paper"] == 1 and counts["prepare_data"] == 4 and counts["benchmark_grid"] == 2

    subprocess.run([sys.executable, "-m", "sparsedepth.data.snapshot", "results/rehearsal/hub"],
                   cwd=tmp_path, check=True, capture_output=True)
    run = "results/runs/S/dense/tinystories/seed0"
    targets = [f"{run}/eval.json", "results/data/wikitext2-v16384/meta.json"]
    result = snakemake("--cores", "2", "--configfile", rehearsal, "--directory", str(tmp_path), *targets,
                       timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("tinystories", "wikitext2"):
        prepared = tmp_path / "results" / "data" / f"{name}-v16384"
        assert json.loads((prepared / "meta.json").read_text())["tokenizer_vocab_size"] == 16384  # paper's
        source = json.loads((prepared / "source.json").read_text())
        assert source["location"] == str((tmp_path / "results/rehearsal/hub" / name).resolve())
        assert all(f["name"].endswith(".parquet") for f in source["files"])
    evaluation = json.loads((tmp_path / run / "eval.json").read_text())
    assert evaluation["device"] == "cpu" and evaluation["modes"]["causal"]["test"]["n_tokens"] == 2 * 1024
    summary = json.loads((tmp_path / run / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["n_params"] > 30_000_000  # S at vocab 16384
